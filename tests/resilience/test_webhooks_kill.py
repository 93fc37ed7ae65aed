"""Webhooks across ``kill -9`` of ``airflow-sidecar serve``: every event delivered once, signed.

A receiver on loopback gets the events of two backfills while the sidecar is killed twice:
right after a cancel is answered (its event recorded, not yet sent) and while it is down a
backfill's runs finish (its state changed, no event recorded yet). A second ``serve`` on the
same database delivers what the first could not: exactly one signed event per transition,
and Watch reports the same events.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.resilience.helpers import ONE_TASK_DAG, create_request, query, start_serve
from tests.support.fixtures import AirflowDatabase
from tests.support.processes import AirflowProcess
from tests.support.waiting import wait_until
from tests.support.webhooks import Receiver, receiver

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

SECRET = "kill-9-webhook-secret"
ENV = {
    "SIDECAR_WEBHOOK_SECRET": SECRET,
    "SIDECAR_WEBHOOK_ALLOW_PRIVATE": "1",
    "SIDECAR_WEBHOOK_ALLOW_HTTP": "1",
}


def _kill(process: AirflowProcess) -> None:
    assert process.popen is not None
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(10)
    process.stop()


def _create(target: str, hook: Receiver, start: str, end: str, mode: int) -> pb.Backfill:
    request = create_request(ONE_TASK_DAG, start, end, mode=mode, max_active_runs=2)
    request.backfill.webhook.url = hook.url
    with grpc.insecure_channel(target) as channel:
        created: pb.Backfill = backfill_pb2_grpc.BackfillServiceStub(channel).CreateBackfill(request).backfill
    return created


def _events(hook: Receiver) -> list[tuple[int, str]]:
    return sorted((r.json["backfill"]["id"], r.json["kind"]) for r in hook.snapshot())


@pytest.mark.timeout(180)
def test_each_transition_is_delivered_once_across_kill_9(module_db: AirflowDatabase, tmp_path: Path) -> None:
    with receiver() as hook:
        first, target = start_serve(module_db.asyncpg_url, tmp_path / "first.log", env=ENV)
        try:
            windowed = _create(target, hook, "2024-01-01T00:00:00Z", "2024-01-20T00:00:00Z", pb.MODE_WINDOWED)
            with grpc.insecure_channel(target) as channel:
                stub = backfill_pb2_grpc.BackfillServiceStub(channel)
                stub.PauseBackfill(pb.PauseBackfillRequest(name=windowed.name))
                wait_until(lambda: len(hook.snapshot()) == 1, 30, 0.1, lambda: "the paused event")
                # Cancelled, and killed at once: its event is recorded, most likely not yet sent.
                stub.CancelBackfill(pb.CancelBackfillRequest(name=windowed.name))
            _kill(first)
        finally:
            first.stop()
        # While no sidecar runs, an eager backfill's runs all finish: its completion is owed.
        second, target = start_serve(module_db.asyncpg_url, tmp_path / "second.log", env=ENV)
        try:
            eager = _create(target, hook, "2023-01-01T00:00:00Z", "2023-01-05T00:00:00Z", pb.MODE_EAGER)
            _kill(second)
        finally:
            second.stop()
        query(module_db, "UPDATE dag_run SET state = 'success' WHERE backfill_id = %s", eager.id)
        third, target = start_serve(module_db.asyncpg_url, tmp_path / "third.log", env=ENV)
        try:
            expected = sorted([(windowed.id, "paused"), (windowed.id, "cancelled"), (eager.id, "completed")])
            wait_until(lambda: _events(hook) == expected, 60, 0.2, lambda: f"events {_events(hook)}")
            with grpc.insecure_channel(target) as channel:
                stub = backfill_pb2_grpc.BackfillServiceStub(channel)
                watched = [
                    e.kind
                    for u in stub.WatchBackfill(pb.WatchBackfillRequest(name=windowed.name), timeout=30)
                    for e in u.events
                ]
                assert watched == ["paused", "cancelled"]
                shown = stub.GetBackfill(pb.GetBackfillRequest(name=windowed.name)).backfill.webhook
                assert shown.target.startswith("http://127.0.0.1:") and hook.url not in str(shown)
                assert (shown.undelivered, shown.given_up) == (0, 0)
            time.sleep(3)  # three more notifier passes: nothing is sent twice
        finally:
            third.stop()
        got = hook.snapshot()
        assert _events(hook) == expected
        assert all(r.signed_by(SECRET) for r in got)
        assert len({r.headers["x-sidecar-event-id"] for r in got}) == len(got) == 3
