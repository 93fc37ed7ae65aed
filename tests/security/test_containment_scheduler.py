"""End to end: one poisoned backfill and three healthy ones, in the real Airflow 3.3.2 scheduler.

``airflow-sidecar serve`` writes into Airflow's PostgreSQL database; the real scheduler
with the shim (``airflow-sidecar scheduler``) ticks it once per loop and LocalExecutor
runs the tasks. The poisoned backfill's rows are inserted past every check (a conf
``jsonb`` refuses): it is set aside on the first tick, while the three healthy ones are
written window by window (``max_active_runs=1``) and run to success; no Tick fails (the
shim logs none), Airflow's completion timer is held off the set-aside one, Get and the
CLI show its reason, and cancel ends it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.e2e.test_sidecar_backfill import _query
from tests.resilience.helpers import start_serve
from tests.security.test_containment_tick import insert_poisoned
from tests.support.airflow import process_environ
from tests.support.fixtures import AirflowDatabase
from tests.support.stack import airflow_stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

#: (dag_id, to_date, reprocess behaviour, conf) of the healthy backfills, all from 2025-01-01.
HEALTHY = [
    ("sidecar_e2e_three", "2025-01-03T00:00:00Z", pb.REPROCESS_BEHAVIOR_NONE, ""),
    ("sidecar_it_params", "2025-01-03T00:00:00Z", pb.REPROCESS_BEHAVIOR_NONE, '{"batch": 2}'),
    ("sidecar_it_depends_on_past", "2025-01-02T00:00:00Z", pb.REPROCESS_BEHAVIOR_FAILED, ""),
]
POISONED_DAG = "sidecar_it_no_backfill"


def _create(
    stub: backfill_pb2_grpc.BackfillServiceStub,
    spec: tuple[str, str, pb.ReprocessBehavior.ValueType, str],
) -> int:
    dag_id, to_date, reprocess, conf = spec
    backfill = pb.Backfill(dag_id=dag_id, max_active_runs=1, reprocess_behavior=reprocess, dag_run_conf=conf)
    backfill.from_date.FromJsonString("2025-01-01T00:00:00Z")
    backfill.to_date.FromJsonString(to_date)
    response = stub.CreateBackfill(pb.CreateBackfillRequest(backfill=backfill), timeout=30)
    return int(response.backfill.id)


@pytest.mark.timeout(600)
def test_a_poisoned_backfill_does_not_stop_three_healthy_ones_in_the_real_scheduler(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    sidecar, target = start_serve(
        airflow_db.asyncpg_url,
        tmp_path / "logs" / "sidecar.log",
        tick_interval=3600,  # only the shim ticks
    )
    env = {**airflow_db.env, "SIDECAR_TARGET": target, "SIDECAR_TICK_DEADLINE": "2.0"}
    try:
        poisoned = asyncio.run(insert_poisoned(airflow_db, POISONED_DAG, {"a": "\x00"}))
        with grpc.insecure_channel(target) as channel:
            stub = backfill_pb2_grpc.BackfillServiceStub(channel)
            healthy = [_create(stub, spec) for spec in HEALTHY]
            with airflow_stack(
                env, tmp_path / "logs", scheduler_command=[sys.executable, "-m", "sidecar", "scheduler"]
            ) as stack:
                deadline = time.monotonic() + 420
                while True:
                    stack.assert_running()
                    states = [
                        stub.GetBackfill(
                            pb.GetBackfillRequest(name=f"backfills/{i}"), timeout=30
                        ).backfill.state
                        for i in healthy
                    ]
                    if all(s == pb.Backfill.STATE_COMPLETED for s in states):
                        break
                    assert time.monotonic() < deadline, f"{states}\n--- sidecar ---\n{sidecar.log_tail()}"
                    time.sleep(2)

                set_aside = stub.GetBackfill(
                    pb.GetBackfillRequest(name=f"backfills/{poisoned}"), timeout=30
                ).backfill
                scheduler_log = stack.scheduler.log_tail(1_000_000)
                cli = subprocess.run(
                    [sys.executable, "-m", "sidecar", "backfill", "--target", target, "get", str(poisoned)],
                    env=process_environ(env),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                cancelled = stub.CancelBackfill(
                    pb.CancelBackfillRequest(name=f"backfills/{poisoned}"), timeout=30
                ).backfill
    finally:
        sidecar.stop()

    # The healthy ones: every run written and succeeded in the real scheduler.
    for backfill_id, (dag_id, _, _, _) in zip(healthy, HEALTHY, strict=True):
        runs = _query(
            airflow_db,
            "SELECT state, count(*) FROM dag_run WHERE backfill_id = %s GROUP BY state",
            backfill_id,
        )
        planned = _query(
            airflow_db,
            "SELECT planned_count, written_count FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s",
            backfill_id,
        )
        assert planned[0][0] == planned[0][1] >= 2, (dag_id, planned)
        assert runs == [("success", planned[0][0])], (dag_id, runs)
    # The poisoned one: set aside with its reason, never completed by Airflow's timer, then cancelled.
    assert set_aside.state == pb.Backfill.STATE_ACTIVE
    assert set_aside.write_failure.set_aside and set_aside.write_failure.reason == "data_exception"
    assert set_aside.write_failure.attempts == 1
    assert not set_aside.HasField("complete_time")
    assert cli.returncode == 0, cli.stderr
    assert "active, set aside" in cli.stdout and "data_exception" in cli.stdout, cli.stdout
    assert cancelled.state == pb.Backfill.STATE_CANCELLED
    assert _query(airflow_db, "SELECT count(*) FROM dag_run WHERE backfill_id = %s", poisoned) == [(0,)]
    log = sidecar.log_tail(1_000_000)
    assert f"backfill {poisoned} set aside (data_exception)" in log
    # No Tick answered an error (a tick late on this loaded machine may miss the shim's deadline).
    failed = [
        line
        for line in scheduler_log.splitlines()
        if "sidecar tick failed" in line and "DEADLINE_EXCEEDED" not in line
    ]
    assert not failed, failed[:5]
