"""The ledger on PostgreSQL with the real Airflow 3.3.2 schema: claims, phases, state filters, and failures.

Failures are real PostgreSQL errors, not mocks: serialization failures and deadlocks
raised by the server (a trigger raising the SQLSTATE, or two transactions locking in
opposite orders), and a backend terminated mid-transaction (``pg_terminate_backend``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg2
import psycopg2.extensions
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.auth import Access
from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, State
from sidecar.errors import Aborted, InvalidTransition
from sidecar.observability import REGISTRY
from sidecar.server import SidecarServer
from sidecar.store import (
    Database,
    Failure,
    Phase,
    RetryPolicy,
    Transactions,
    claim_batch,
    count_unfinished_runs,
    has_unfinished_runs,
    list_backfills,
    set_paused,
)
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

UTC = dt.UTC
ONE_TASK = "sidecar_it_params"  # @daily, one task
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, first_delay=0.001, max_delay=0.01)


def _spec(days: int = 10) -> BackfillSpec:
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    return BackfillSpec(
        dag_id=ONE_TASK, from_date=start, to_date=start + dt.timedelta(days=days - 1), max_active_runs=2
    )


async def _create(engine: BackfillEngine) -> int:
    view = await engine.create(_spec())
    assert not isinstance(view, DryRun)
    return view.id


@pytest.fixture
def inject(sql: psycopg2.extensions.cursor) -> Iterator[psycopg2.extensions.cursor]:
    """Lets a test put a failing trigger on ``backfill`` updates; removed afterwards."""
    yield sql
    sql.execute("DROP TRIGGER IF EXISTS ledger_test_fault ON backfill")
    sql.execute("DROP FUNCTION IF EXISTS ledger_test_fault()")
    sql.execute("DROP SEQUENCE IF EXISTS ledger_test_attempts")


def _fail_backfill_updates(sql: psycopg2.extensions.cursor, times: int | None, action: str) -> None:
    """Make the next ``times`` updates of ``backfill`` (all, if None) run ``action`` in the server."""
    sql.execute("CREATE SEQUENCE ledger_test_attempts")  # not transactional: counts rolled-back tries
    limit = "true" if times is None else f"nextval('ledger_test_attempts') <= {times}"
    sql.execute(
        f"""
        CREATE FUNCTION ledger_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {limit} THEN {action}; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER ledger_test_fault BEFORE UPDATE ON backfill
            FOR EACH ROW EXECUTE FUNCTION ledger_test_fault();
        """
    )


async def test_a_batch_claim_skips_a_backfill_another_replica_holds(
    engine: BackfillEngine, database: Database
) -> None:
    backfill_id = await _create(engine)
    async with database.engine.begin() as first:
        claimed = await claim_batch(first, backfill_id)
        assert claimed is not None
        assert (claimed.phase, claimed.written_count, claimed.dag_id) == (Phase.MATERIALIZING, 3, ONE_TASK)
        async with database.engine.begin() as second:
            assert await claim_batch(second, backfill_id) is None  # SKIP LOCKED: no waiting, no batch


async def test_unfinished_runs_are_counted_only_as_far_as_asked(
    engine: BackfillEngine, database: Database, sql: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _create(engine)  # its first window is written: 3 queued runs
    async with database.engine.connect() as conn:
        everything = await count_unfinished_runs(conn, backfill_id)
        assert everything == 3
        assert await count_unfinished_runs(conn, backfill_id, at_most=2) == 2
        assert await count_unfinished_runs(conn, backfill_id, at_most=10) == everything
        assert await has_unfinished_runs(conn, backfill_id)
    sql.execute("UPDATE dag_run SET state = 'success' WHERE backfill_id = %s", (backfill_id,))
    async with database.engine.connect() as conn:
        assert await count_unfinished_runs(conn, backfill_id, at_most=2) == 0
        assert not await has_unfinished_runs(conn, backfill_id)


async def test_every_phase_change_is_guarded(engine: BackfillEngine, sql: psycopg2.extensions.cursor) -> None:
    backfill_id = await _create(engine)
    await engine.cancel(backfill_id)
    sql.execute("SELECT phase FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s", (backfill_id,))
    assert sql.fetchone() == ("cancelled",)
    for action in (engine.cancel(backfill_id), engine.set_paused(backfill_id, True)):
        with pytest.raises(
            InvalidTransition, match=rf"^cannot (cancel|pause): backfill {backfill_id} is cancelled$"
        ):
            await action
    # The tick does not complete a cancelled backfill, nor write to it.
    result = await engine.tick()
    assert (result.runs_written, result.backfills_completed, result.materializing) == (0, 0, [])


async def test_the_state_filter_matches_each_records_state(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    phases: list[Phase | None] = [None, *Phase]
    combos = list(itertools.product(phases, (None, NOW), (False, True)))
    for phase, completed_at, paused in combos:
        sql.execute(
            "INSERT INTO backfill (dag_id, from_date, to_date, dag_run_conf, is_paused, reprocess_behavior,"
            " max_active_runs, created_at, completed_at, updated_at)"
            " VALUES (%s, %s, %s, '{}', %s, 'none', 1, %s, %s, %s) RETURNING id",
            (ONE_TASK, NOW, NOW, paused, NOW, completed_at, NOW),
        )
        backfill_id = sql.fetchone()[0]
        if phase is not None:
            sql.execute(
                "INSERT INTO airflow_sidecar.sidecar_backfill (backfill_id, dag_id, phase, mode, run_backwards,"
                " cutoff, timetable, dag_run_conf_given, written_count, skipped_count, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'windowed', false, %s, '{}', false, 0, 0, %s, %s)",
                (backfill_id, ONE_TASK, phase.value, NOW, NOW, NOW),
            )
    async with database.engine.connect() as conn:
        everything = await list_backfills(conn, dag_id=ONE_TASK, state=None, limit=100, before_id=None)
        assert len(everything) == len(combos)
        for state in State:
            listed = await list_backfills(conn, dag_id=ONE_TASK, state=state, limit=100, before_id=None)
            expected = {r.id for r in everything if r.state is state}
            assert expected, state  # every state occurs: the comparison cannot pass vacuously
            assert {r.id for r in listed} == expected, state


@pytest.mark.parametrize(
    ("times", "action", "failure"),
    [
        (2, "RAISE EXCEPTION 'injected' USING ERRCODE = '40001'", Failure.SERIALIZATION),
        # The backend kills itself mid-transaction: the retry runs on a new connection.
        (1, "PERFORM pg_terminate_backend(pg_backend_pid())", Failure.CONNECTION),
    ],
    ids=["serialization-failure", "terminated-backend"],
)
async def test_a_transient_failure_is_retried(
    engine: BackfillEngine,
    database: Database,
    inject: psycopg2.extensions.cursor,
    times: int,
    action: str,
    failure: Failure,
) -> None:
    backfill_id = await _create(engine)
    _fail_backfill_updates(inject, times, action)
    failures: list[Failure] = []
    tx = Transactions(database, FAST, failures.append)
    await tx.write(lambda conn: set_paused(conn, backfill_id, True, NOW, Access.unrestricted()))
    assert failures == [failure] * times
    assert (await engine.get(backfill_id)).state is State.PAUSED


async def test_retries_are_bounded_then_aborted(
    engine: BackfillEngine, database: Database, inject: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _create(engine)
    _fail_backfill_updates(inject, None, "RAISE EXCEPTION 'injected' USING ERRCODE = '40P01'")
    failures: list[Failure] = []
    tx = Transactions(database, FAST, failures.append)
    with pytest.raises(Aborted, match="deadlock") as excinfo:
        await tx.write(lambda conn: set_paused(conn, backfill_id, True, NOW, Access.unrestricted()))
    assert excinfo.value.reason == "DATABASE_CONFLICT"
    assert failures == [Failure.DEADLOCK] * 3


def _deadlock_count() -> float:
    return REGISTRY.get_sample_value("sidecar_database_errors_total", {"failure": "deadlock"}) or 0.0


async def test_a_real_deadlock_with_another_transaction_is_retried(
    engine: BackfillEngine, clean_db: AirflowDatabase, sql: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _create(engine)
    other = psycopg2.connect(clean_db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        cur = other.cursor()
        cur.execute("SET deadlock_timeout = '30s'")  # the sidecar's backend detects the deadlock
        cur.execute("SELECT id FROM backfill WHERE id = %s FOR UPDATE", (backfill_id,))
        before = _deadlock_count()
        # The cancel locks the sidecar row, then waits for Airflow's row, which ``other`` holds ...
        cancel = asyncio.create_task(engine.cancel(backfill_id))
        deadline = time.monotonic() + 10
        while True:
            sql.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'airflow-sidecar'"
                " AND wait_event_type = 'Lock'"
            )
            if sql.fetchone()[0]:
                break
            assert time.monotonic() < deadline, "the cancel never waited for the row lock"
            await asyncio.sleep(0.02)

        # ... and ``other`` now waits for the sidecar row: a deadlock, which PostgreSQL breaks
        # by aborting the sidecar's transaction; ``other`` then commits and the retry succeeds.
        def lock_then_commit() -> None:
            cur.execute(
                "SELECT backfill_id FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s FOR UPDATE",
                (backfill_id,),
            )
            other.commit()

        locker = threading.Thread(target=lock_then_commit)
        locker.start()
        view = await asyncio.wait_for(cancel, 30)
        locker.join(10)
    finally:
        other.close()
    assert view.state is State.CANCELLED
    assert _deadlock_count() == before + 1


@pytest.fixture
async def stub(server: SidecarServer) -> AsyncIterator[backfill_pb2_grpc.BackfillServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield backfill_pb2_grpc.BackfillServiceStub(channel)


async def test_a_deadlock_that_persists_reaches_the_caller_as_aborted(
    stub: backfill_pb2_grpc.BackfillServiceStub, server: SidecarServer, inject: psycopg2.extensions.cursor
) -> None:
    assert server.engine is not None
    backfill_id = await _create(server.engine)
    _fail_backfill_updates(inject, None, "RAISE EXCEPTION 'injected' USING ERRCODE = '40P01'")
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.PauseBackfill(pb.PauseBackfillRequest(name=f"backfills/{backfill_id}"))
    error = excinfo.value
    assert error.code() is grpc.StatusCode.ABORTED
    assert "injected" not in (error.details() or "")  # no SQL or server text reaches the caller
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "DATABASE_CONFLICT"
