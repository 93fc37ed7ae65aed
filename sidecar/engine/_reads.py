"""Reading backfills back as a caller sees them: views with live progress, and slots."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.auth import Access
from sidecar.engine._config import Parts
from sidecar.engine._counting import plan_of
from sidecar.engine._model import BackfillView, Progress, SlotView
from sidecar.engine._offload import PlanningPool
from sidecar.engine._plans import run_of
from sidecar.errors import InvalidArgument
from sidecar.planning import PlannedRun, pending_runs
from sidecar.store import (
    PENDING_RUNS,
    BackfillRecord,
    ExistingRun,
    list_backfills,
    load_backfill,
    page_of_backfills,
    plan_record,
    run_state_counts,
    webhook_status,
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
        # Still being counted (runs remain to be written): what is written is a lower bound.
        counting = planned is None and record.stored_phase in PENDING_RUNS
        if planned is None and record.stored_phase is None:  # Airflow made it: its slots are its runs
            planned = sum(c.values())
        elif planned is None:  # being counted, or never (cancelled first): the slots written
            planned = int(record.written_count or 0)
        out[record.id] = Progress(
            planned=int(planned),
            written=int(record.written_count if record.written_count is not None else planned),
            queued=c.get("queued", 0),
            running=c.get("running", 0),
            succeeded=c.get("success", 0),
            failed=c.get("failed", 0),
            skipped=int(record.skipped_count or 0),
            planned_is_counting=counting,
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
        run_on_latest_version=record.run_on_latest_version,
        bundle_version=record.bundle_version,
        task_selection=record.task_selection,
        selected_task_ids=record.selected_task_ids,
        controls=record.controls,
        pause_reason=record.pause_reason if state is State.PAUSED else None,
    )


#: Chunks of a listing read per call when the caller may read only some DAGs: a call's cost
#: stays bounded; a page that is short then still carries a token to go on.
LIST_CHUNKS = 4


async def get(parts: Parts, backfill_id: int, access: Access) -> BackfillView:
    """One backfill with its live progress, authorised for ``access`` on the row read.

    Raises:
        BackfillNotFound: none, or of a DAG the caller may not read.
        PermissionDenied: the caller may read it but not do the call's action.
    """

    async def read(conn: AsyncConnection) -> BackfillView:
        record = await load_backfill(conn, backfill_id, access)
        view = view_of(record, (await progress_of(conn, [record]))[record.id])
        webhook = await webhook_status(conn, record.id)
        return dataclasses.replace(view, webhook=webhook) if webhook is not None else view

    return await parts.tx.read(read)


async def _readable(
    conn: AsyncConnection,
    access: Access,
    *,
    dag_id: str | None,
    state: State | None,
    page_size: int,
    before_id: int | None,
) -> tuple[list[BackfillRecord], int | None]:
    """Up to ``page_size + 1`` backfills ``access`` may read, and where the scan stopped.

    Reads chunks narrowed in SQL to the caller's DAG globs (a superset), keeps the rows the
    policy accepts, and stops after :data:`LIST_CHUNKS` chunks. The second value is the id
    to continue before when the budget ran out first, None when the table was read to its end.
    """
    globs = None if dag_id else access.readable_globs()
    found: list[BackfillRecord] = []
    cursor = before_id
    for _ in range(LIST_CHUNKS):
        chunk = await list_backfills(
            conn, dag_id=dag_id, state=state, limit=page_size + 1, before_id=cursor, dag_globs=globs
        )
        found += [record for record in chunk if access.may_read(record.dag_id)]
        if len(chunk) <= page_size:
            return found, None
        cursor = chunk[-1].id
        if len(found) > page_size:
            break
    return found, cursor


async def list_views(
    parts: Parts,
    access: Access,
    *,
    dag_id: str | None,
    state: State | None,
    page_size: int,
    before_id: int | None,
    skip: int = 0,
    ascending: bool = False,
) -> tuple[list[BackfillView], int | None, int | None]:
    """A page of the backfills ``access`` may read, the id to continue past, and how many match.

    When the database alone can decide what the caller sees (a ``dag_id`` filter the caller
    may read, or a caller who reads every DAG), one page and one count are read there, with
    ``skip`` and the ordering (``before_id`` is the position past which the page starts).
    Otherwise the policy filters row by row (:func:`_readable`): newest first, no ``skip``,
    the count unknown (None), and a page full unless few scanned rows are readable.

    Raises:
        InvalidArgument: ``skip`` or ``ascending`` on a listing the policy filters row by row.
    """
    if (dag_id and access.may_read(dag_id)) or (not dag_id and access.readable_globs() is None):

        async def page(conn: AsyncConnection) -> tuple[list[BackfillRecord], int, dict[int, Progress]]:
            records, total = await page_of_backfills(
                conn,
                dag_id=dag_id,
                state=state,
                limit=page_size + 1,
                skip=skip,
                past_id=before_id,
                ascending=ascending,
            )
            return records, total, await progress_of(conn, records[:page_size])

        records, total, progress = await parts.tx.read(page)
        more = len(records) > page_size
        records = records[:page_size]
        return [view_of(r, progress[r.id]) for r in records], (records[-1].id if more else None), total
    if skip or ascending:
        raise InvalidArgument(
            "skip and order_by need a dag_id filter (or a caller who may read every DAG)",
            field="skip" if skip else "order_by",
        )

    async def read(conn: AsyncConnection) -> tuple[list[BackfillRecord], int | None, dict[int, Progress]]:
        found, stopped = await _readable(
            conn, access, dag_id=dag_id, state=state, page_size=page_size, before_id=before_id
        )
        return found, stopped, await progress_of(conn, found[:page_size])

    found, stopped, progress = await parts.tx.read(read)
    page_records = found[:page_size]
    following = page_records[-1].id if len(found) > page_size else stopped
    return [view_of(r, progress[r.id]) for r in page_records], following, None


def planned_slot(run: PlannedRun, disposition: Disposition, existing: ExistingRun | None = None) -> SlotView:
    """A slot of the plan not written yet (with the run already there for its date, if any)."""
    info = run.info
    dated = not info.partitioned
    return SlotView(
        sort_ordinal=run.sort_ordinal,
        logical_date=info.logical_date if dated else None,
        data_interval_start=info.data_interval_start if dated else None,
        data_interval_end=info.data_interval_end if dated else None,
        run_after=info.run_after,
        run_id=existing.run_id if existing else run.run_id,
        disposition=disposition,
        dag_run_id=existing.id if existing else None,
        state=existing.state if existing else None,
        partition_key=info.partition_key,
        partition_date=info.partition_date,
    )


async def pending_slots(
    conn: AsyncConnection, pool: PlanningPool, backfill_id: int, after_ordinal: int, limit: int
) -> list[SlotView]:
    """Slots of a windowed backfill not written yet, computed from the stored plan (in a worker)."""
    record = await plan_record(conn, backfill_id)
    if record is None or record.phase not in PENDING_RUNS or limit <= 0:
        return []
    plan, resume = plan_of(record), run_of(record.cursor)
    runs, cut = await pool.run(pending_runs, plan, resume, after_ordinal, limit)
    if cut:
        raise InvalidArgument(
            "listing pending slots this far ahead of the written ones needs more planning than one "
            "call may spend; use a smaller page_size",
            field="page_token",
        )
    return [planned_slot(r, Disposition.PENDING) for r in runs]


async def list_slots(
    parts: Parts,
    pool: PlanningPool,
    backfill_id: int,
    access: Access,
    *,
    page_size: int,
    after_ordinal: int,
) -> tuple[list[SlotView], int | None]:
    """A page of a backfill's slots in plan order, written ones first, then pending ones.

    The backfill is authorised for ``access`` in the transaction that reads its slots.
    """

    async def read(conn: AsyncConnection) -> list[SlotView]:
        await load_backfill(conn, backfill_id, access)
        slots = await written_slots(conn, backfill_id, after_ordinal, page_size + 1)
        if len(slots) <= page_size:
            last = slots[-1].sort_ordinal if slots else after_ordinal
            slots += await pending_slots(conn, pool, backfill_id, last, page_size + 1 - len(slots))
        return slots

    slots = await parts.tx.read(read)
    more = len(slots) > page_size
    slots = slots[:page_size]
    return slots, (slots[-1].sort_ordinal if more else None)
