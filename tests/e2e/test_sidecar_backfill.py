"""End to end: backfills submitted over gRPC run to success in the real Airflow 3.3.2 scheduler.

The sidecar (``airflow-sidecar serve``) writes the backfill's rows into Airflow's
PostgreSQL database; the real scheduler with the shim (``airflow-sidecar scheduler``)
ticks it once per loop and LocalExecutor runs the tasks. Windowed mode with
``max_active_runs=2`` means runs are created while earlier ones finish. A partitioned DAG's
backfill (a range of partition keys, newest first) runs the same way.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.parity.versions import WRITES_PARTITIONS
from tests.support.airflow import JWT_SECRET
from tests.support.authz import token
from tests.support.cli import SIDECAR, create_backfill
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


def _backfill_in_the_real_scheduler(
    airflow_db: AirflowDatabase,
    tmp_path: Path,
    dag_id: str,
    first: str,
    last: str,
    *options: str,
    partition_keys: bool = False,
) -> str:
    """Serve the sidecar, start Airflow with the shim, run ``backfill create ... --watch``;
    return the sidecar's log once the backfill ended."""
    target = f"127.0.0.1:{free_port()}"
    # Secure by default: the sidecar shares Airflow's JWT secret, and the shim and the CLI send an
    # Airflow-style HS512 token whose role lets the shim call Tick.
    env = {
        **airflow_db.env,
        "SIDECAR_TARGET": target,
        "SIDECAR_TICK_DEADLINE": "1.0",
        "SIDECAR_JWT_SECRET": JWT_SECRET,
        "SIDECAR_TOKEN": token("e2e", role="scheduler"),
    }
    sidecar = AirflowProcess(
        "sidecar",
        [
            *SIDECAR,
            "serve",
            "--database-url",
            airflow_db.asyncpg_url,
            "--listen",
            target,
            "--tick-interval",
            "3600",  # only the shim ticks: proves the scheduler calls the sidecar
        ],
        env,
        tmp_path / "logs" / "sidecar.log",
    ).start()
    try:
        sidecar.wait_ready(lambda: _grpc_serving(target), timeout=60)
        with airflow_stack(env, tmp_path / "logs", scheduler_command=[*SIDECAR, "scheduler"]):
            cli = create_backfill(
                env, target, dag_id, first, last, *options, partition_keys=partition_keys, watch=True
            )
            assert cli.returncode == 0, f"{cli.stderr}\n--- sidecar ---\n{sidecar.log_tail()}"
    finally:
        sidecar.stop()
    return sidecar.log_tail(1_000_000)


@pytest.mark.timeout(420)
def test_grpc_backfill_runs_to_success_in_the_real_scheduler(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    log = _backfill_in_the_real_scheduler(
        airflow_db, tmp_path, DAG_ID, "2025-01-01", "2025-01-05", "--max-active-runs", "2"
    )
    runs = _query(
        airflow_db,
        "SELECT r.run_id, r.state, b.sort_ordinal FROM dag_run r JOIN backfill_dag_run b ON b.dag_run_id = r.id "
        "WHERE r.dag_id = %s ORDER BY b.sort_ordinal",
        DAG_ID,
    )
    assert runs == [(f"backfill__2025-01-0{d}T00:00:00+00:00", "success", d) for d in range(1, 6)]
    tis = _query(
        airflow_db,
        "SELECT ti.state, count(*) FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id"
        " WHERE ti.dag_id = %s AND r.backfill_id IS NOT NULL GROUP BY ti.state",
        DAG_ID,
    )
    assert tis == [("success", 15)]
    backfills = _query(
        airflow_db, "SELECT completed_at IS NOT NULL, is_paused FROM backfill WHERE dag_id = %s", DAG_ID
    )
    assert backfills == [(True, False)]
    # Windowed: the first window (2 + lookahead 2) at creation, the last slot written later by a tick.
    assert "wrote slots 1..4" in log and "wrote slots 5..5" in log
    # The shim held Airflow's completion timer back while the sidecar was writing: nothing reopened.
    assert "completed early" not in log


@pytest.mark.timeout(420)
@pytest.mark.skipif(
    not WRITES_PARTITIONS,
    reason="partitioned DAGs are backfilled on Airflow 3.3 (refused by name on 3.2; 3.1 has none)",
)
def test_partitioned_backfill_runs_to_success_in_the_real_scheduler(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    """A partition range given as keys, newest first, windowed, run by the real scheduler."""
    dag_id = "sidecar_it_partitioned"  # daily partitions in New York, keyed "%Y-%m-%d"
    log = _backfill_in_the_real_scheduler(
        airflow_db,
        tmp_path,
        dag_id,
        "2025-01-01",
        "2025-01-04",
        *("--ordering", "newest-first", "--max-active-runs", "1"),
        partition_keys=True,
    )
    runs = _query(
        airflow_db,
        "SELECT r.partition_key, r.logical_date, r.state, b.sort_ordinal FROM dag_run r"
        " JOIN backfill_dag_run b ON b.dag_run_id = r.id WHERE r.dag_id = %s ORDER BY b.sort_ordinal",
        dag_id,
    )
    assert runs == [(f"2025-01-0{d}", None, "success", 5 - d) for d in (4, 3, 2, 1)]
    tis = _query(
        airflow_db,
        "SELECT ti.state, count(*) FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id"
        " WHERE ti.dag_id = %s AND r.backfill_id IS NOT NULL GROUP BY ti.state",
        dag_id,
    )
    assert tis == [("success", 8)]
    assert _query(airflow_db, "SELECT completed_at IS NOT NULL FROM backfill WHERE dag_id = %s", dag_id) == [
        (True,)
    ]
    assert "wrote slots 1..3" in log and "wrote slots 4..4" in log  # 1 + lookahead 2, then a tick
    assert "completed early" not in log
