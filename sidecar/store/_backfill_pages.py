"""One page of backfills and the number matching, read in the database (never every page).

Airflow's ``GET /api/v2/backfills`` takes ``limit``/``offset`` and answers the page with
``total_entries``; ``ListBackfills`` takes a page token, ``skip`` (AIP-158) and an
ordering. Either way one call runs two statements: the page (``LIMIT``/``OFFSET`` on the
primary key's order) and a ``count(*)`` under the same filter.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._backfill_reads import BackfillRecord, backfill_query
from sidecar.store._phases import state_filter
from sidecar.store._tables import backfill, sidecar_backfill
from sidecar.vocabulary import State

__all__ = ["page_of_backfills"]


def _filtered(query: sa.Select[Any], dag_id: str | None, state: State | None) -> sa.Select[Any]:
    if dag_id:
        query = query.where(backfill.c.dag_id == dag_id)
    if state is not None:
        query = query.where(state_filter(state))
    return query


async def page_of_backfills(
    conn: AsyncConnection,
    *,
    dag_id: str | None,
    state: State | None,
    limit: int,
    skip: int = 0,
    past_id: int | None = None,
    ascending: bool = False,
) -> tuple[list[BackfillRecord], int]:
    """Up to ``limit`` backfills in id order (newest first unless ``ascending``), and how many match.

    Args:
        past_id: Continue after this id in the chosen order (a page token's position).
        skip: Backfills to pass over first (after ``past_id``).
    """
    order = backfill.c.id.asc() if ascending else backfill.c.id.desc()
    query = _filtered(backfill_query(), dag_id, state).order_by(order).limit(limit).offset(skip)
    if past_id is not None:
        query = query.where(backfill.c.id > past_id if ascending else backfill.c.id < past_id)
    records = [BackfillRecord.of(row) for row in await conn.execute(query)]
    counted = sa.select(sa.func.count()).select_from(
        backfill.outerjoin(sidecar_backfill, sidecar_backfill.c.backfill_id == backfill.c.id)
    )
    total = await conn.scalar(_filtered(counted, dag_id, state))
    return records, int(total or 0)
