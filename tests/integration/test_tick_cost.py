"""A tick's queries on ``dag_run`` read what is in flight, not the backfill's or the table's size.

Issue 14: every tick counted a backfill's unfinished runs, a scan of every queued run
(52 ms a tick with 100,000 queued), and its failed runs by ``backfill_id`` (no index: a scan
of the whole table). Measured as rows the executor actually read (``EXPLAIN (ANALYZE)`` of
each statement a tick sends), never as wall time: a backfill with 4,000 finished runs, 4,000
queued runs of its own and 4,000 queued runs of another DAG must cost a tick what it costs
with 200 of each; so must a windowed backfill's question whether its window has room.
The metrics' queued-runs gauge reads the queued runs it counts, from the index alone.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg2.extensions
import pytest
from sqlalchemy import event

from sidecar.engine import BackfillEngine, BackfillSpec, Controls, DryRun, Mode
from sidecar.store import (
    Database,
    backfill_stats,
    count_failed_runs,
    count_unfinished_runs,
    has_unfinished_runs,
    plan_for_first_rows,
)

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

UTC = dt.UTC
ONE_TASK = "sidecar_it_params"  # @daily, one task
OTHER = "sidecar_it_interval"
START = dt.datetime(2020, 1, 1, tzinfo=UTC)


def _heap_fetches(plan: dict[str, Any]) -> int:
    """Rows the index-only scans of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan had to read from the table."""
    return int(plan.get("Heap Fetches", 0)) + sum(_heap_fetches(child) for child in plan.get("Plans", []))


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows every scan node of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan read, filtered ones too."""
    total = 0
    if plan["Node Type"].endswith("Scan"):
        read = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        total += (read + plan.get("Rows Removed by Index Recheck", 0)) * plan["Actual Loops"]
    return total + sum(_rows_read(child) for child in plan.get("Plans", []))


class _Statements:
    """The SELECTs the sidecar sends while the ``with`` block runs, then what they read."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.sent: list[tuple[str, Any]] = []

    def __enter__(self) -> _Statements:
        event.listen(self._database.engine.sync_engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._database.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "SET")):
            self.sent.append((statement, parameters))

    async def plans(self) -> list[dict[str, Any]]:
        """The SELECTs' executed plans, replayed in order (planner settings too) in one transaction."""
        plans: list[dict[str, Any]] = []
        async with self._database.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            transaction = raw.transaction()
            await transaction.start()
            for statement, parameters in self.sent:
                if statement.lstrip().upper().startswith("SET"):
                    await raw.execute(statement)
                    continue
                explained = await raw.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", *(parameters or ())
                )
                plans.append((explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"])
            await transaction.rollback()
        return plans

    async def rows_read(self) -> int:
        """Rows the SELECTs read."""
        return sum(_rows_read(plan) for plan in await self.plans())

    async def heap_fetches(self) -> int:
        """Rows the SELECTs' index-only scans read from the table after all."""
        return sum(_heap_fetches(plan) for plan in await self.plans())


def _arrange(sql: psycopg2.extensions.cursor, backfill_id: int, history: int) -> None:
    """All but one of the backfill's runs finished; ``history`` more finished runs of it,
    ``history`` more queued runs of it, and ``history`` queued runs of another DAG (copies of
    its first run, earlier dates)."""
    sql.execute(
        "UPDATE dag_run SET state = 'success' WHERE backfill_id = %s AND logical_date > %s",
        (backfill_id, START),
    )
    columns = [
        name
        for (name,) in _fetch(
            sql,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'dag_run' "
            "AND table_schema = 'public' AND column_name NOT IN ('id', 'run_id', 'logical_date', "
            "'dag_id', 'state', 'backfill_id')",
        )
    ]
    copied = ", ".join(columns)
    copies = (
        (ONE_TASK, "success", backfill_id, 1),
        (ONE_TASK, "queued", backfill_id, history + 1),
        (OTHER, "queued", None, 1),
    )
    for dag_id, state, owner, first in copies:
        sql.execute(
            f"INSERT INTO dag_run (dag_id, run_id, logical_date, state, backfill_id, {copied}) "
            f"SELECT %s, 'history_' || g, logical_date - g * interval '1 day', %s, %s, {copied} "
            "FROM dag_run, generate_series(%s, %s) AS g WHERE backfill_id = %s AND logical_date = %s",
            (dag_id, state, owner, first, first + history - 1, backfill_id, START),
        )
    sql.execute("VACUUM ANALYZE dag_run")  # dead index entries of earlier rounds are not history


def _fetch(sql: psycopg2.extensions.cursor, query: str) -> list[tuple[Any, ...]]:
    sql.execute(query)
    return list(sql.fetchall())


async def _tick_reads(
    engine: BackfillEngine, database: Database, sql: psycopg2.extensions.cursor, history: int
) -> int:
    sql.execute("DELETE FROM task_instance; DELETE FROM backfill_dag_run; DELETE FROM dag_run")
    sql.execute("DELETE FROM airflow_sidecar.sidecar_backfill; DELETE FROM backfill")
    spec = BackfillSpec(
        dag_id=ONE_TASK,
        from_date=START,
        to_date=START + dt.timedelta(days=29),
        mode=Mode.EAGER,
        controls=Controls(max_failed_runs=3),  # the failed-runs check runs each tick too
    )
    view = await engine.create(spec)  # every run written: a tick asks whether any is left
    assert not isinstance(view, DryRun)
    _arrange(sql, view.id, history)
    with _Statements(database) as statements:
        result = await engine.tick()
        assert result.backfills_completed == 0  # runs are still queued
        async with database.engine.connect() as conn:  # the tick's questions, a windowed backfill's too
            await plan_for_first_rows(conn)  # as the tick's read plans them
            assert await count_unfinished_runs(conn, view.id, at_most=10) == 10
            assert await has_unfinished_runs(conn, view.id)
            assert await count_failed_runs(conn, view.id, at_most=3) == 0
    assert len(statements.sent) >= 5
    return await statements.rows_read()


async def test_a_tick_reads_what_is_in_flight_not_the_history(
    engine: BackfillEngine, database: Database, sql: psycopg2.extensions.cursor
) -> None:
    small = await _tick_reads(engine, database, sql, 200)
    large = await _tick_reads(engine, database, sql, 4_000)
    assert large <= small + 20, (small, large)
    assert large < 200, large


async def _gauge_reads(
    engine: BackfillEngine, database: Database, sql: psycopg2.extensions.cursor, history: int
) -> tuple[int, int]:
    """What the metrics' counts read with ``history`` each of finished, queued and other runs."""
    sql.execute("DELETE FROM task_instance; DELETE FROM backfill_dag_run; DELETE FROM dag_run")
    sql.execute("DELETE FROM airflow_sidecar.sidecar_backfill; DELETE FROM backfill")
    spec = BackfillSpec(
        dag_id=ONE_TASK, from_date=START, to_date=START + dt.timedelta(days=29), mode=Mode.EAGER
    )
    view = await engine.create(spec)
    assert not isinstance(view, DryRun)
    _arrange(sql, view.id, history)
    with _Statements(database) as statements:
        async with database.engine.connect() as conn:
            _, depths = await backfill_stats(conn)
    assert depths == [(view.id, ONE_TASK, history + 1)]
    return await statements.rows_read(), await statements.heap_fetches()


async def test_the_queued_runs_gauge_reads_the_queued_runs_it_counts_from_the_index(
    engine: BackfillEngine, database: Database, sql: psycopg2.extensions.cursor
) -> None:
    small, small_heap = await _gauge_reads(engine, database, sql, 200)
    large, large_heap = await _gauge_reads(engine, database, sql, 4_000)
    # The 3,800 more queued runs it counts, not the finished ones nor another DAG's queued runs.
    assert large - small == 3_800, (small, large)
    assert small_heap == large_heap == 0
