"""A Watch's estimate does not read the durations at every poll, only when a run finished.

WatchBackfill reads the backfill afresh every second; its estimate needs the durations of
finished runs (the backfill's own, else the DAG's history), which change only when a run
finishes. Statements are counted with a SQLAlchemy event listener on the engine, never timed;
the engine's clock stands still (the test moves it), so the cache's age limit never decides
the outcome by itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.api import BackfillServicer
from sidecar.engine import BackfillEngine, EngineConfig, Mode
from sidecar.engine._estimates import DURATIONS_MAX_AGE
from sidecar.names import backfill_name
from sidecar.store import Database
from tests.integration.test_engine import THREE, day, spec
from tests.integration.test_webhooks import Clock
from tests.support.waiting import async_wait_until

POLLS = 20
"""Polls watched while nothing changes."""


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    """Every SQL statement the engine runs while the test does."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    target = database.engine.sync_engine
    sa.event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(target, "before_cursor_execute", record)


@pytest.fixture
def clock() -> Clock:
    """The engine's clock: it stands still until the test moves it."""
    return Clock()


@pytest.fixture
async def stub(database: Database, clock: Clock) -> AsyncIterator[backfill_pb2_grpc.BackfillServiceStub]:
    """A gRPC server polling every 10 ms for a Watch, on an engine whose clock is ``clock``."""
    engine = BackfillEngine(database, EngineConfig(), clock=clock)
    server = grpc.aio.server()
    backfill_pb2_grpc.add_BackfillServiceServicer_to_server(
        BackfillServicer(engine, watch_interval=0.01), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield backfill_pb2_grpc.BackfillServiceStub(channel)
    finally:
        await server.stop(None)


def polls(statements: list[str]) -> int:
    """Polls of a Watch so far: each reads the backfill's events once."""
    return sum("FROM airflow_sidecar.sidecar_event" in s and "sidecar_event.id >" in s for s in statements)


def durations_reads(statements: list[str]) -> int:
    """Reads of finished runs' durations: each starts with the backfill's own runs."""
    return sum("end_date IS NOT NULL" in s and "backfill_dag_run" in s for s in statements)


async def test_a_watch_reads_durations_when_a_run_finishes_not_at_every_poll(
    stub: backfill_pb2_grpc.BackfillServiceStub,
    database: Database,
    sql: psycopg2.extensions.cursor,
    statements: list[str],
    clock: Clock,
) -> None:
    for d in (20, 21, 22):  # the DAG's history, outside the backfill's range: runs of an hour
        sql.execute(
            "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
            " span_status, start_date, end_date) VALUES (%s, %s, %s, %s, 'success', 'manual', 0,"
            " 'not_started', %s, %s)",
            (THREE, f"manual__{d}", day(d), day(d), day(d), day(d) + dt.timedelta(hours=1)),
        )
    created = await BackfillEngine(database).create(spec(max_active_runs=2, mode=Mode.EAGER))
    statements.clear()
    stream = stub.WatchBackfill(pb.WatchBackfillRequest(name=backfill_name(created.id)))
    first = await stream.read()
    assert isinstance(first, pb.WatchBackfillResponse)
    assert first.backfill.estimate.basis == "history"
    assert durations_reads(statements) == 1

    await _polled(statements, POLLS)
    assert durations_reads(statements) == 1  # POLLS polls, and no run finished: no read

    # A run finishes: the next poll reads the durations again, once, and its update shows it.
    sql.execute(
        "UPDATE dag_run SET state = 'success', start_date = logical_date,"
        " end_date = logical_date + interval '10 seconds'"
        " WHERE id = (SELECT min(id) FROM dag_run WHERE backfill_id = %s)",
        (created.id,),
    )
    update = await stream.read()
    assert isinstance(update, pb.WatchBackfillResponse)
    assert update.backfill.progress.succeeded == 1
    assert durations_reads(statements) == 2
    await _polled(statements, POLLS)
    assert durations_reads(statements) == 2

    # Past their age limit, the durations are read again (the DAG's other runs may have finished).
    clock.now += DURATIONS_MAX_AGE
    await _polled(statements, POLLS)
    assert durations_reads(statements) == 3
    stream.cancel()


async def _polled(statements: list[str], more: int) -> None:
    """Wait until the Watch has polled ``more`` more times."""
    wanted = polls(statements) + more

    async def enough() -> bool:
        return polls(statements) >= wanted

    await async_wait_until(enough, timeout=30, interval=0.01, message=f"{more} polls")
