"""The eager contract on real PostgreSQL: a create answers only once every run is committed.

Whoever writes the batches: the create itself, the timer tick that claims the backfill's
next batch while the create is writing (another task hammering ``tick`` here, as the
server's own ticker or the shim would), or the first call of a retried create (same
``request_id``). Each race is run many times on purpose; on every return, the rows of
the whole plan must already be committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, EngineConfig, Mode, Phase
from sidecar.store import Database

pytestmark = pytest.mark.postgres

UTC = dt.UTC
DAG = "sidecar_e2e_three"
RUNS = 120
ITERATIONS = 12


def eager(iteration: int) -> BackfillSpec:
    """An eager backfill of ``RUNS`` daily runs, on a range of its own for each iteration."""
    start = dt.datetime(2000, 1, 1, tzinfo=UTC) + dt.timedelta(days=200 * iteration)
    return BackfillSpec(
        dag_id=DAG,
        from_date=start,
        to_date=start + dt.timedelta(days=RUNS - 1),
        mode=Mode.EAGER,
        max_active_runs=1,
    )


def committed(sql: psycopg2.extensions.cursor, backfill_id: int) -> tuple[int, int, str]:
    """Runs and slots committed for the backfill, and its phase, as another session sees them."""
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (backfill_id,))
    runs = sql.fetchone()[0]
    sql.execute("SELECT count(*) FROM backfill_dag_run WHERE backfill_id = %s", (backfill_id,))
    slots = sql.fetchone()[0]
    sql.execute("SELECT phase FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s", (backfill_id,))
    return runs, slots, sql.fetchone()[0]


def release(sql: psycopg2.extensions.cursor) -> None:
    """Close the DAG's backfill (as if its runs finished), so that the next iteration may start."""
    sql.execute("UPDATE backfill SET completed_at = now() WHERE dag_id = %s AND completed_at IS NULL", (DAG,))


async def hammer(ticker: BackfillEngine, stop: asyncio.Event) -> int:
    """Tick without pause until stopped (the timer at its most eager); the runs it wrote."""
    written = 0
    while not stop.is_set():
        written += (await ticker.tick()).runs_written
        await asyncio.sleep(0)
    return written


async def test_create_races_the_tick_and_answers_only_when_all_is_committed(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    config = EngineConfig(batch_size=6, lookahead=1)
    creator, ticker = BackfillEngine(database, config), BackfillEngine(database, config)
    by_tick = 0
    for iteration in range(ITERATIONS):
        stop = asyncio.Event()
        ticks = asyncio.create_task(hammer(ticker, stop))
        try:
            view = await creator.create(eager(iteration))
            assert isinstance(view, BackfillView)
            assert committed(sql, view.id) == (RUNS, RUNS, Phase.MATERIALIZED.value), iteration
            assert view.progress.written == view.progress.planned == RUNS
        finally:
            stop.set()
            by_tick += await ticks
        release(sql)
    # The race happened: the tick wrote some of the batches while creates were writing.
    assert by_tick > 0


async def test_a_retried_create_answers_only_when_the_first_calls_rows_are_committed(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    config = EngineConfig(batch_size=6, lookahead=1)
    first_engine, retry_engine, ticker = (BackfillEngine(database, config) for _ in range(3))
    joined = 0
    for iteration in range(ITERATIONS):
        spec = eager(ITERATIONS + iteration)
        first = asyncio.create_task(first_engine.create(spec, request_id=f"eager-{iteration}"))
        # Retry as soon as the first call's backfill is visible, while it is still writing.
        while True:
            sql.execute(
                "SELECT b.id, s.written_count FROM backfill b JOIN airflow_sidecar.sidecar_backfill s"
                " ON s.backfill_id = b.id WHERE b.dag_id = %s AND b.completed_at IS NULL",
                (DAG,),
            )
            row = sql.fetchone()
            if row is not None or first.done():
                break
            await asyncio.sleep(0.001)
        joined += row is not None and row[1] < RUNS
        stop = asyncio.Event()
        ticks = asyncio.create_task(hammer(ticker, stop)) if iteration % 2 else None
        try:
            again = await retry_engine.create(spec, request_id=f"eager-{iteration}")
            assert isinstance(again, BackfillView)
            assert committed(sql, again.id) == (RUNS, RUNS, Phase.MATERIALIZED.value), iteration
            assert again.progress.written == RUNS
            view = await first
            assert isinstance(view, BackfillView) and view.id == again.id
            assert committed(sql, view.id) == (RUNS, RUNS, Phase.MATERIALIZED.value)
        finally:
            stop.set()
            if ticks is not None:
                await ticks
        release(sql)
    # The retries did arrive while the first calls were still writing.
    assert joined > 0
