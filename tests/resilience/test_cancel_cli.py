"""``airflow-sidecar backfill cancel ID --terminate-running`` against a running ``serve``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.resilience.helpers import create_request, query, start_serve
from tests.support.cli import sidecar_backfill
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]


def test_cancel_terminate_running_from_the_cli(module_db: AirflowDatabase, tmp_path: Path) -> None:
    import grpc

    sidecar, target = start_serve(module_db.asyncpg_url, tmp_path / "sidecar.log", tick_interval=3600)
    try:
        with grpc.insecure_channel(target) as channel:
            backfill = (
                backfill_pb2_grpc.BackfillServiceStub(channel)
                .CreateBackfill(
                    create_request(
                        "sidecar_e2e_three",
                        "2025-01-01T00:00:00Z",
                        "2025-01-08T00:00:00Z",
                        mode=pb.MODE_WINDOWED,
                        max_active_runs=2,
                    ),
                    timeout=30,
                )
                .backfill
            )
        (run_id,) = query(
            module_db,
            "UPDATE dag_run SET state = 'running' WHERE id = (SELECT min(id) FROM dag_run WHERE backfill_id = %s)"
            " RETURNING run_id",
            backfill.id,
        )[0]
        query(
            module_db,
            "UPDATE task_instance SET state = 'running' WHERE run_id = %s AND task_id = 'first'",
            run_id,
        )
        cli = sidecar_backfill(
            {}, target, "cancel", str(backfill.id), "--terminate-running", "--output", "json", timeout=60
        )
        assert cli.returncode == 0, cli.stderr
    finally:
        sidecar.stop()
    assert query(module_db, "SELECT DISTINCT state FROM dag_run WHERE backfill_id = %s", backfill.id) == [
        ("failed",)
    ]
    assert query(
        module_db, "SELECT task_id, state FROM task_instance WHERE run_id = %s ORDER BY task_id", run_id
    ) == [("first", "failed"), ("second", "skipped"), ("third", "skipped")]
    assert query(
        module_db, "SELECT completed_at IS NOT NULL, is_paused FROM backfill WHERE id = %s", backfill.id
    ) == [(True, False)]
