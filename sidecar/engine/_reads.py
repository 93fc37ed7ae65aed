"""Reading backfills back as a caller sees them: views with live progress, and slots."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._config import Parts
from sidecar.engine._counting import plan_of
from sidecar.engine._model import BackfillView, Progress, SlotView
from sidecar.engine._plans import run_of
from sidecar.planning import PlannedRun
from sidecar.store import (
    PENDING_RUNS,
    BackfillRecord,
    ExistingRun,
    get_backfill,
    list_backfills,
    plan_record,
    run_state_counts,
    written_slots,
)
from sidecar.vocabulary import Disposition, Mode, State


async def progress_of(conn: AsyncConnection, records: Sequence[BackfillRecord]) -> dict[int, Progress]:
    """Live progress of several backfills, with one grouped count of their runs."""
    counts = await run_state_counts(conn, [r.id for r in records])
    out: dict[int, Progress] = {}
    for record in records:
        c = counts[record.id]
        planned = record.planned_count
        if planned is None and record.stored_phase is None:  # Airflow made it: its slots are its runs
            planned = sum(c.values())
        elif planned is None:  # still being counted: what is written is a lower bound
            planned = int(record.written_count or 0)
        out[record.id] = Progress(
            planned=int(planned),
            written=int(record.written_count if record.written_count is not None else planned),
            queued=c.get("queued", 0),
            running=c.get("running", 0),
            succeeded=c.get("success", 0),
            failed=c.get("failed", 0),
            skipped=int(record.skipped_count or 0),
        )
    return out


def view_of(record: BackfillRecord, progress: Progress) -> BackfillView:
    """A backfill record as a caller sees it."""
    state = record.state
    return BackfillView(
        id=record.id,
        dag_id=record.dag_id,
        from_date=record.from_date,
        to_date=record.to_date,
        dag_run_conf=record.dag_run_conf,
        reprocess_behavior=record.reprocess_behavior,
        max_active_runs=record.max_active_runs,
        run_backwards=record.run_backwards,
        mode=record.mode or Mode.EAGER,
        is_paused=record.is_paused,
        state=state,
        progress=progress,
        triggering_user_name=record.triggering_user_name,
        created_at=record.created_at,
        updated_at=record.updated_at,
        completed_at=record.completed_at if state in (State.COMPLETED, State.CANCELLED) else None,
        write_failure=record.write_failure if state in (State.ACTIVE, State.PAUSED) else None,
    )


async def get(parts: Parts, backfill_id: int) -> BackfillView:
    """One backfill with its live progress (``BackfillNotFound`` if none)."""

    async def read(conn: AsyncConnection) -> BackfillView:
        record = await get_backfill(conn, backfill_id)
        return view_of(record, (await progress_of(conn, [record]))[record.id])

    return await parts.tx.read(read)


async def list_views(
    parts: Parts, *, dag_id: str | None, state: State | None, page_size: int, before_id: int | None
) -> tuple[list[BackfillView], int | None]:
    """A page of backfills, newest first, and the id to continue before (None on the last page)."""

    async def read(conn: AsyncConnection) -> tuple[list[BackfillRecord], dict[int, Progress]]:
        records = await list_backfills(
            conn, dag_id=dag_id, state=state, limit=page_size + 1, before_id=before_id
        )
        return records, await progress_of(conn, records[:page_size])

    records, progress = await parts.tx.read(read)
    more = len(records) > page_size
    records = records[:page_size]
    return [view_of(r, progress[r.id]) for r in records], (records[-1].id if more else None)


def planned_slot(run: PlannedRun, disposition: Disposition, existing: ExistingRun | None = None) -> SlotView:
    """A slot of the plan not written yet (with the run already there for its date, if any)."""
    return SlotView(
        sort_ordinal=run.sort_ordinal,
        logical_date=run.info.logical_date,
        data_interval_start=run.info.data_interval_start,
        data_interval_end=run.info.data_interval_end,
        run_after=run.info.run_after,
        run_id=existing.run_id if existing else run.run_id,
        disposition=disposition,
        dag_run_id=existing.id if existing else None,
        state=existing.state if existing else None,
    )


async def pending_slots(
    conn: AsyncConnection, backfill_id: int, after_ordinal: int, limit: int
) -> list[SlotView]:
    """Slots of a windowed backfill not written yet, computed from the stored plan."""
    record = await plan_record(conn, backfill_id)
    if record is None or record.phase not in PENDING_RUNS or limit <= 0:
        return []
    runs = plan_of(record).runs(after=run_of(record.cursor))
    pending = (r for r in runs if r.sort_ordinal > after_ordinal)
    return [planned_slot(r, Disposition.PENDING) for r in itertools.islice(pending, limit)]


async def list_slots(
    parts: Parts, backfill_id: int, *, page_size: int, after_ordinal: int
) -> tuple[list[SlotView], int | None]:
    """A page of a backfill's slots in plan order, written ones first, then pending ones."""
    await get(parts, backfill_id)

    async def read(conn: AsyncConnection) -> list[SlotView]:
        slots = await written_slots(conn, backfill_id, after_ordinal, page_size + 1)
        if len(slots) <= page_size:
            last = slots[-1].sort_ordinal if slots else after_ordinal
            slots += await pending_slots(conn, backfill_id, last, page_size + 1 - len(slots))
        return slots

    slots = await parts.tx.read(read)
    more = len(slots) > page_size
    slots = slots[:page_size]
    return slots, (slots[-1].sort_ordinal if more else None)
