"""Reading backfills back: state, live progress, slots."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._model import BackfillView, Mode, Phase, Progress, SlotView, State
from sidecar.engine._plans import build_plan, run_of
from sidecar.planning import BackfillPlan
from sidecar.store._tables import backfill, backfill_dag_run, dag_run, sidecar_backfill

_COLUMNS = (
    backfill,
    sidecar_backfill.c.phase,
    sidecar_backfill.c.mode,
    sidecar_backfill.c.run_backwards,
    sidecar_backfill.c.planned_count,
    sidecar_backfill.c.written_count,
    sidecar_backfill.c.skipped_count,
)


def backfill_query() -> sa.Select[Any]:
    """Airflow's backfill rows with the sidecar's own columns (NULL for backfills Airflow made)."""
    return sa.select(*_COLUMNS).select_from(
        backfill.outerjoin(sidecar_backfill, sidecar_backfill.c.backfill_id == backfill.c.id)
    )


def state_of(row: Any) -> State:
    """The caller-facing state of a backfill row."""
    if row.phase == Phase.CANCELLED.value:
        return State.CANCELLED
    if row.completed_at is not None and row.phase != Phase.MATERIALIZING.value:
        return State.COMPLETED
    if row.is_paused:
        return State.PAUSED
    return State.ACTIVE


def state_filter(state: State) -> sa.ColumnElement[bool]:
    """The SQL condition matching :func:`state_of`."""
    phase = sa.func.coalesce(sidecar_backfill.c.phase, "")
    not_cancelled = phase != Phase.CANCELLED.value
    open_ = sa.or_(backfill.c.completed_at.is_(None), phase == Phase.MATERIALIZING.value)
    if state is State.CANCELLED:
        return phase == Phase.CANCELLED.value
    if state is State.COMPLETED:
        return sa.and_(not_cancelled, sa.not_(open_))
    paused = sa.func.coalesce(backfill.c.is_paused, False)
    if state is State.PAUSED:
        return sa.and_(not_cancelled, open_, paused)
    return sa.and_(not_cancelled, open_, sa.not_(paused))


async def progress_of(conn: AsyncConnection, rows: Sequence[Any]) -> dict[int, Progress]:
    """Live progress of several backfills, with one grouped count of their runs."""
    ids = [r.id for r in rows]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    if ids:
        result = await conn.execute(
            sa.select(dag_run.c.backfill_id, dag_run.c.state, sa.func.count())
            .where(dag_run.c.backfill_id.in_(ids))
            .group_by(dag_run.c.backfill_id, dag_run.c.state)
        )
        for backfill_id, run_state, n in result:
            counts[backfill_id][run_state or ""] = int(n)
    out: dict[int, Progress] = {}
    for row in rows:
        c = counts[row.id]
        planned = row.planned_count
        if planned is None and row.phase is None:  # Airflow made it: its slots are its runs
            planned = sum(c.values())
        elif planned is None:  # still being counted: what is written is a lower bound
            planned = int(row.written_count or 0)
        out[row.id] = Progress(
            planned=int(planned),
            written=int(row.written_count if row.written_count is not None else planned),
            queued=c.get("queued", 0),
            running=c.get("running", 0),
            succeeded=c.get("success", 0),
            failed=c.get("failed", 0),
            skipped=int(row.skipped_count or 0),
        )
    return out


def view_of(row: Any, progress: Progress) -> BackfillView:
    """A backfill row as a caller sees it."""
    conf = row.dag_run_conf
    return BackfillView(
        id=row.id,
        dag_id=row.dag_id,
        from_date=row.from_date,
        to_date=row.to_date,
        dag_run_conf=conf if isinstance(conf, dict) else None,
        reprocess_behavior=row.reprocess_behavior,
        max_active_runs=row.max_active_runs,
        run_backwards=bool(row.run_backwards),
        mode=Mode(row.mode) if row.mode else Mode.EAGER,
        is_paused=bool(row.is_paused),
        state=state_of(row),
        progress=progress,
        triggering_user_name=row.triggering_user_name,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at if state_of(row) in (State.COMPLETED, State.CANCELLED) else None,
    )


async def written_slots(
    conn: AsyncConnection, backfill_id: int, after_ordinal: int, limit: int
) -> list[SlotView]:
    """Written slots in plan order, each with its run or the reason none was made."""
    result = await conn.execute(
        sa.select(
            backfill_dag_run.c.sort_ordinal,
            backfill_dag_run.c.logical_date,
            backfill_dag_run.c.exception_reason,
            backfill_dag_run.c.dag_run_id,
            dag_run.c.run_id,
            dag_run.c.state,
            dag_run.c.data_interval_start,
            dag_run.c.data_interval_end,
            dag_run.c.run_after,
            dag_run.c.clear_number,
        )
        .select_from(backfill_dag_run.outerjoin(dag_run, dag_run.c.id == backfill_dag_run.c.dag_run_id))
        .where(backfill_dag_run.c.backfill_id == backfill_id, backfill_dag_run.c.sort_ordinal > after_ordinal)
        .order_by(backfill_dag_run.c.sort_ordinal)
        .limit(limit)
    )
    slots = []
    for r in result:
        if r.exception_reason:
            disposition = r.exception_reason
        elif r.clear_number and r.clear_number > 0:
            disposition = "reprocess"
        else:
            disposition = "create"
        slots.append(
            SlotView(
                sort_ordinal=r.sort_ordinal,
                logical_date=r.logical_date,
                data_interval_start=r.data_interval_start,
                data_interval_end=r.data_interval_end,
                run_after=r.run_after,
                run_id=r.run_id or "",
                disposition=disposition,
                dag_run_id=r.dag_run_id,
                state=r.state,
            )
        )
    return slots


async def stored_plan(conn: AsyncConnection, backfill_id: int) -> tuple[Any, BackfillPlan] | None:
    """A sidecar backfill's own row (with its range) and the plan rebuilt from it; None if none."""
    row = (
        await conn.execute(
            sa.select(sidecar_backfill, backfill.c.from_date, backfill.c.to_date)
            .join(backfill, backfill.c.id == sidecar_backfill.c.backfill_id)
            .where(sidecar_backfill.c.backfill_id == backfill_id)
        )
    ).one_or_none()
    if row is None:
        return None
    plan = build_plan(row.timetable, row.dag_id, row.from_date, row.to_date, row.run_backwards, row.cutoff)
    return row, plan


async def pending_slots(
    conn: AsyncConnection, backfill_id: int, after_ordinal: int, limit: int
) -> list[SlotView]:
    """Slots of a windowed backfill not written yet, computed from the stored plan."""
    stored = await stored_plan(conn, backfill_id)
    if stored is None or stored[0].phase != Phase.MATERIALIZING.value or limit <= 0:
        return []
    row, plan = stored
    runs = plan.runs(after=run_of(row.cursor))
    pending = (r for r in runs if r.sort_ordinal > after_ordinal)
    return [
        SlotView(
            sort_ordinal=r.sort_ordinal,
            logical_date=r.info.logical_date,
            data_interval_start=r.info.data_interval_start,
            data_interval_end=r.info.data_interval_end,
            run_after=r.info.run_after,
            run_id=r.run_id,
            disposition="pending",
        )
        for r in itertools.islice(pending, limit)
    ]


def utcnow() -> dt.datetime:
    """The current time, aware UTC."""
    return dt.datetime.now(dt.UTC)


async def backfill_stats(conn: AsyncConnection) -> tuple[dict[str, int], list[tuple[int, str, int]]]:
    """Backfills by caller-facing state, and the queued runs of each open backfill (for metrics)."""
    counts: dict[str, int] = {}
    for state in State:
        value = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(
                backfill.outerjoin(sidecar_backfill, sidecar_backfill.c.backfill_id == backfill.c.id)
            )
            .where(state_filter(state))
        )
        counts[state.value] = int(value or 0)
    result = await conn.execute(
        sa.select(backfill.c.id, backfill.c.dag_id, sa.func.count(dag_run.c.id))
        .select_from(
            backfill.outerjoin(
                dag_run, sa.and_(dag_run.c.backfill_id == backfill.c.id, dag_run.c.state == "queued")
            )
        )
        .where(backfill.c.completed_at.is_(None))
        .group_by(backfill.c.id, backfill.c.dag_id)
    )
    return counts, [(int(i), str(d), int(n)) for i, d, n in result]
