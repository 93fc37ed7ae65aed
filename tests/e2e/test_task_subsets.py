"""End to end: a task subset in the real Airflow 3.3.2 scheduler.

``first >> second >> third``, backfilled with ``--task-regex '^second$'``: ``second`` runs
although its upstream ``first`` is excluded, ``first`` and ``third`` never run and are not
re-added by the scheduler (their task instances stay ``removed``), and every run ends
``success`` in Airflow (what its UI shows). Windowed mode: the last run is written by a
tick of the shim, with the same selection.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import jwt
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.airflow import JWT_SECRET, process_environ
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import AirflowProcess
from tests.support.stack import airflow_stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

DAG_ID = "sidecar_e2e_three"


def _grpc_serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _query(db: AirflowDatabase, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.mark.timeout(420)
def test_only_the_selected_tasks_run_and_the_runs_succeed(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{free_port()}"
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": "e2e",
            "role": "scheduler",
            "aud": "apache-airflow",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        },
        JWT_SECRET,
        algorithm="HS512",
    )
    env = {
        **airflow_db.env,
        "SIDECAR_TARGET": target,
        "SIDECAR_TICK_DEADLINE": "1.0",
        "SIDECAR_JWT_SECRET": JWT_SECRET,
        "SIDECAR_TOKEN": token,
    }
    sidecar = AirflowProcess(
        "sidecar",
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--database-url",
            airflow_db.asyncpg_url,
            "--listen",
            target,
        ],
        env,
        tmp_path / "logs" / "sidecar.log",
    ).start()
    try:
        sidecar.wait_ready(lambda: _grpc_serving(target), timeout=60)
        with airflow_stack(
            env, tmp_path / "logs", scheduler_command=[sys.executable, "-m", "sidecar", "scheduler"]
        ):
            cli = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sidecar",
                    "backfill",
                    "--target",
                    target,
                    "create",
                    "--dag-id",
                    DAG_ID,
                    "--from-date",
                    "2025-01-01",
                    "--to-date",
                    "2025-01-04",
                    "--max-active-runs",
                    "1",
                    "--task-regex",
                    "^second$",
                    "--watch",
                    "--output",
                    "json",
                ],
                env=process_environ(env),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert cli.returncode == 0, f"{cli.stderr}\n--- sidecar ---\n{sidecar.log_tail()}"
            # Let the scheduler examine the finished runs again: nothing is re-added or re-run.
            time.sleep(5)
    finally:
        sidecar.stop()

    runs = _query(
        airflow_db,
        "SELECT r.run_id, r.state FROM dag_run r JOIN backfill_dag_run b ON b.dag_run_id = r.id "
        "WHERE r.dag_id = %s ORDER BY b.sort_ordinal",
        DAG_ID,
    )
    assert runs == [(f"backfill__2025-01-0{d}T00:00:00+00:00", "success") for d in range(1, 5)]
    tis = _query(
        airflow_db,
        "SELECT ti.task_id, ti.state, ti.try_number, ti.start_date IS NULL, count(*) FROM task_instance ti"
        " JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id"
        " WHERE ti.dag_id = %s AND r.backfill_id IS NOT NULL"
        " GROUP BY ti.task_id, ti.state, ti.try_number, ti.start_date IS NULL ORDER BY ti.task_id",
        DAG_ID,
    )
    # The selected task ran once per run although its upstream was excluded; the others never
    # started (no try, no start date) and are still the one removed instance the sidecar wrote.
    assert tis == [
        ("first", "removed", 0, True, 4),
        ("second", "success", 1, False, 4),
        ("third", "removed", 0, True, 4),
    ]
    history = _query(
        airflow_db,
        "SELECT count(*) FROM task_instance_history WHERE dag_id = %s AND task_id <> 'second'",
        DAG_ID,
    )
    assert history == [(0,)]
    backfills = _query(airflow_db, "SELECT completed_at IS NOT NULL FROM backfill WHERE dag_id = %s", DAG_ID)
    assert backfills == [(True,)]
    # Windowed (max_active_runs 1 + look-ahead 2): the fourth run was written by a tick, which
    # read the recorded selection.
    assert "wrote slots 4..4" in sidecar.log_tail(1_000_000)
    shown = json.loads(cli.stdout.strip().splitlines()[-1])  # --watch: one JSON line per change
    assert shown["task_selection"]["selected_task_ids"] == ["second"]
