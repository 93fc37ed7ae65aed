"""Helpers shared by the resilience tests: start ``serve``, call it, and check Airflow's rows.

The tests inject faults for real and then check the database, never the sidecar's own
view of it.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg2

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import AirflowProcess, grpc_serving
from tests.support.waiting import wait_until

#: A one-task @daily DAG: 20,000 runs are 1970-01-02 .. 2024-10-04 (the epoch itself reads as
#: "unset" in proto3, so the range starts a day later).
ONE_TASK_DAG = "sidecar_it_params"
FROM_20K, TO_20K = "1970-01-02T00:00:00Z", "2024-10-04T00:00:00Z"


Db = AirflowDatabase | str
"""A test database, or a libpq URL of one (``postgresql://...``)."""


def query(db: Db, statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run one SQL statement on ``db`` (autocommit) and return its rows."""
    dsn = db if isinstance(db, str) else db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def scalar(db: Db, statement: str, *params: object) -> object:
    """The first column of the first row."""
    return query(db, statement, *params)[0][0]


@functools.cache
def _no_auth() -> tuple[str, ...]:
    """``--no-auth`` when ``serve`` knows it (loopback only: authentication is tested elsewhere)."""
    usage = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return ("--no-auth",) if "--no-auth" in usage else ()


def start_serve(
    database_url: str, log: Path, *, tick_interval: float = 0.3, env: dict[str, str] | None = None
) -> tuple[AirflowProcess, str]:
    """``airflow-sidecar serve`` on a free port, ticking on its own every ``tick_interval`` s."""
    target = f"127.0.0.1:{free_port()}"
    process = AirflowProcess(
        "sidecar",
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--database-url",
            database_url,
            "--listen",
            target,
            "--tick-interval",
            str(tick_interval),
            *_no_auth(),
        ],
        dict(env or {}),
        log,
    ).start()
    try:
        process.wait_ready(lambda: grpc_serving(target), 60)
    except BaseException:
        process.stop()
        raise
    return process, target


def create_request(
    dag_id: str, start: str, end: str, *, mode: int, max_active_runs: int = 10
) -> pb.CreateBackfillRequest:
    """A CreateBackfillRequest for ``[start, end]`` (RFC 3339)."""
    backfill = pb.Backfill(dag_id=dag_id, max_active_runs=max_active_runs, mode=mode)
    backfill.from_date.FromJsonString(start)
    backfill.to_date.FromJsonString(end)
    return pb.CreateBackfillRequest(backfill=backfill)


def tick(target: str, timeout: float = 30.0) -> scheduler_pb2.TickResponse:
    """One Tick, as the shim calls it."""
    with grpc.insecure_channel(target) as channel:
        response: scheduler_pb2.TickResponse = scheduler_pb2_grpc.SchedulerServiceStub(channel).Tick(
            scheduler_pb2.TickRequest(scheduler_id="resilience-test"), timeout=timeout
        )
        return response


def assert_backfill_intact(db: Db, dag_id: str, planned: int) -> dict[str, int]:
    """Exactly the planned runs, each with all of its task instances, nothing twice.

    Returns the figures checked (runs, task instances, duplicates found).
    """
    (backfill_id,) = query(db, "SELECT id FROM backfill WHERE dag_id = %s", dag_id)[0]
    runs = scalar(db, "SELECT count(*) FROM dag_run WHERE backfill_id = %s", backfill_id)
    distinct = scalar(
        db, "SELECT count(DISTINCT (dag_id, logical_date)) FROM dag_run WHERE backfill_id = %s", backfill_id
    )
    duplicates = int(runs) - int(distinct)  # type: ignore[call-overload]
    tasks = int(scalar(db, "SELECT count(*) FROM task_instance WHERE dag_id = %s", dag_id))  # type: ignore[call-overload]
    per_run = query(
        db,
        "SELECT r.id FROM dag_run r LEFT JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id"
        " WHERE r.backfill_id = %s GROUP BY r.id HAVING count(ti.task_id) <> %s",
        backfill_id,
        tasks // max(int(runs), 1),  # type: ignore[call-overload]
    )
    links = query(
        db,
        "SELECT count(*), count(DISTINCT sort_ordinal), min(sort_ordinal), max(sort_ordinal),"
        " count(*) FILTER (WHERE r.id IS NULL OR r.backfill_id <> b.backfill_id)"
        " FROM backfill_dag_run b LEFT JOIN dag_run r ON r.id = b.dag_run_id WHERE b.backfill_id = %s",
        backfill_id,
    )[0]
    state = query(
        db,
        "SELECT phase, written_count, planned_count FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s",
        backfill_id,
    )[0]
    assert duplicates == 0
    assert runs == planned, f"{runs} runs, {planned} planned"
    assert per_run == [], f"{len(per_run)} runs without all their task instances"
    assert tasks == planned * (tasks // planned)
    assert links == (planned, planned, 1, planned, 0), links
    assert state[1:] == (planned, planned), state
    return {"runs": int(runs), "task_instances": tasks, "duplicates": duplicates}  # type: ignore[call-overload]


def runs_of(db: Db, dag_id: str = ONE_TASK_DAG) -> int:
    """DAG runs of ``dag_id``."""
    return int(scalar(db, "SELECT count(*) FROM dag_run WHERE dag_id = %s", dag_id))  # type: ignore[call-overload]


def writing(db: Db) -> bool:
    """Whether a transaction with uncommitted writes is open on ``db`` (a batch in flight)."""
    return bool(
        scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL",
        )
    )


def phase_of(db: Db, dag_id: str = ONE_TASK_DAG) -> object:
    """The sidecar's phase of the backfill of ``dag_id`` (None before it exists)."""
    rows = query(
        db,
        "SELECT phase FROM airflow_sidecar.sidecar_backfill WHERE dag_id = %s ORDER BY backfill_id DESC",
        dag_id,
    )
    return rows[0][0] if rows else None


def completed(db: Db, dag_id: str = ONE_TASK_DAG) -> bool:
    """Whether the backfill of ``dag_id`` is completed in Airflow's ``backfill`` table."""
    return query(db, "SELECT completed_at IS NOT NULL FROM backfill WHERE dag_id = %s", dag_id) == [(True,)]


def create_in_background(
    target: str, request: pb.CreateBackfillRequest, errors: list[str]
) -> threading.Thread:
    """Call CreateBackfill in a thread; its gRPC error (if any) is appended to ``errors``."""

    def call() -> None:
        with grpc.insecure_channel(target) as channel:
            try:
                backfill_pb2_grpc.BackfillServiceStub(channel).CreateBackfill(request, timeout=120)
            except grpc.RpcError as exc:  # a fault under the call: expected
                errors.append(f"{exc.code()}: {exc.details()}")

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def wait_for_runs(
    db: Db, more_than: int, errors: list[str], alive: Callable[[], bool], log: Callable[[], str]
) -> None:
    """Wait until more than ``more_than`` runs exist, then until a batch is in flight."""

    def written() -> bool:
        if any("INVALID_ARGUMENT" in e or "FAILED_PRECONDITION" in e for e in errors):
            raise AssertionError(f"CreateBackfill was refused: {errors}")
        return runs_of(db) > more_than or not alive()

    wait_until(written, 120, 0.05, lambda: f"more than {more_than} runs; create errors {errors}\n{log()}")
    wait_until(lambda: writing(db) or not alive(), 30, 0.005, "a batch in flight")
