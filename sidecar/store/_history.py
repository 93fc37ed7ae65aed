"""A DAG's run history, read for estimates and dry-run summaries: bounded reads only.

Every read here has a row limit, and walks an index Airflow already has: ``dag_run``'s unique
``(dag_id, logical_date)`` for a DAG's runs, ``backfill_dag_run``'s ``backfill_id`` for a
backfill's. Durations are computed in Python from ``start_date`` and ``end_date`` so that the
same code serves PostgreSQL and SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._tables import backfill_dag_run, dag_run
from sidecar.store._writer import ExistingRun

__all__ = ["backfill_run_durations", "dag_run_durations", "existing_runs_between"]

_FINISHED = ("success", "failed")


def _seconds(rows: Sequence[tuple[dt.datetime | None, dt.datetime | None]]) -> list[float]:
    return [
        (end - start).total_seconds()
        for start, end in rows
        if start is not None and end is not None and end >= start
    ]


async def dag_run_durations(conn: AsyncConnection, dag_id: str, limit: int) -> list[float]:
    """Durations in seconds of the DAG's latest finished runs (by logical date), at most ``limit``."""
    result = await conn.execute(
        sa.select(dag_run.c.start_date, dag_run.c.end_date)
        .where(dag_run.c.dag_id == dag_id, dag_run.c.state.in_(_FINISHED), dag_run.c.end_date.is_not(None))
        .order_by(dag_run.c.logical_date.desc())
        .limit(limit)
    )
    return _seconds(result.tuples().all())


async def backfill_run_durations(conn: AsyncConnection, backfill_id: int, limit: int) -> list[float]:
    """Durations in seconds of the backfill's latest finished runs, at most ``limit``."""
    result = await conn.execute(
        sa.select(dag_run.c.start_date, dag_run.c.end_date)
        .select_from(backfill_dag_run.join(dag_run, dag_run.c.id == backfill_dag_run.c.dag_run_id))
        .where(
            backfill_dag_run.c.backfill_id == backfill_id,
            dag_run.c.state.in_(_FINISHED),
            dag_run.c.end_date.is_not(None),
        )
        .order_by(dag_run.c.end_date.desc())
        .limit(limit)
    )
    return _seconds(result.tuples().all())


async def existing_runs_between(
    conn: AsyncConnection, dag_id: str, first: dt.datetime, last: dt.datetime, limit: int
) -> tuple[dict[dt.datetime, ExistingRun], bool]:
    """The DAG's runs with a logical date in ``[first, last]``, by logical date, and whether that is all.

    At most ``limit`` runs are read; the flag is False when there were more.
    """
    result = await conn.execute(
        sa.select(dag_run.c.id, dag_run.c.run_id, dag_run.c.state, dag_run.c.logical_date)
        .where(dag_run.c.dag_id == dag_id, dag_run.c.logical_date >= first, dag_run.c.logical_date <= last)
        .order_by(dag_run.c.logical_date)
        .limit(limit + 1)
    )
    rows = result.all()
    found = {row.logical_date: ExistingRun(row.id, row.run_id, row.state) for row in rows[:limit]}
    return found, len(rows) <= limit
