"""The dry run: the slots a create would write, listed, counted and summed up under a planning budget.

A dry run lists at most ``limit`` slots (10,000 by default; 0 for the summary alone) and counts
the whole plan by disposition (create, reprocess, already exists, in flight) up to the limit on
runs per backfill. The plan's first and last logical dates are found first (one step each way);
the runs that already exist between them are read in one bounded read; then one job in a :class:`PlanningPool` worker steps the plan, off the event loop, with the
pool's CPU budget per call, and stops when the caller goes. Over budget the dry run answers with
what it has: the slots listed so far, ``truncated`` set, ``progress.planned`` marked as a lower
bound (``planned_exact`` false) and the summary marked inexact.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._config import Parts
from sidecar.engine._estimates import estimate
from sidecar.engine._model import (
    BackfillSpec,
    BackfillView,
    DryRun,
    PlanSummary,
    Progress,
    SlotView,
    spec_fields,
)
from sidecar.engine._offload import PlanningPool
from sidecar.engine._reads import planned_slot
from sidecar.planning import BackfillPlan, PlanCounts, PlannedRun, count_plan, plan_window
from sidecar.store import ExistingRun, dag_run_durations, decide, existing_runs_between
from sidecar.vocabulary import Disposition, State

__all__ = ["EXISTING_RUNS_READ", "dry_run"]

#: The most existing runs a dry run reads to decide its slots; past it the summary is a lower bound.
EXISTING_RUNS_READ = 100_000


async def dry_run(
    parts: Parts,
    pool: PlanningPool,
    spec: BackfillSpec,
    plan: BackfillPlan,
    now: dt.datetime,
    limit: int,
    selected_task_ids: tuple[str, ...] = (),
) -> DryRun:
    """The plan a create would write, each listed slot with what would happen to it, and its summary."""
    limit = min(limit, parts.config.dry_run_limit)
    most = parts.config.max_runs_per_backfill
    partitioned = plan.timetable.partitioned
    window = await pool.run(plan_window, plan) or (spec.from_date, spec.to_date)

    async def read(conn: AsyncConnection) -> tuple[tuple[dict[dt.datetime, ExistingRun], bool], list[float]]:
        found = await existing_runs_between(
            conn, spec.dag_id, *window, EXISTING_RUNS_READ, partitioned=partitioned
        )
        history = await dag_run_durations(conn, spec.dag_id, parts.config.estimate_sample)
        return found, history

    (existing, read_all), history = await parts.tx.read(read)
    decided = {date: decide(run, spec.reprocess_behavior) for date, run in existing.items()}
    counts: PlanCounts = await pool.run(count_plan, plan, decided, window, limit, most)

    def slot(run: PlannedRun | None) -> SlotView | None:
        if run is None:
            return None
        date = run.info.identity
        return planned_slot(run, decided.get(date, Disposition.CREATE), existing.get(date))

    by = counts.by_disposition
    summary = PlanSummary(
        create=by.get(Disposition.CREATE, 0),
        reprocess=by.get(Disposition.REPROCESS, 0),
        already_exists=by.get(Disposition.ALREADY_EXISTS, 0),
        in_flight=by.get(Disposition.IN_FLIGHT, 0),
        exact=counts.counted_all and read_all,
        first_run=slot(counts.first),
        last_run=slot(counts.last),
    )
    view = BackfillView(
        **spec_fields(spec),
        id=0,
        is_paused=False,
        state=State.ACTIVE,
        progress=Progress(planned=counts.total, skipped=summary.skipped),
        created_at=now,
        updated_at=now,
        completed_at=None,
        selected_task_ids=selected_task_ids,
        estimate=estimate(history, "history", summary.to_run, spec.max_active_runs),
    )
    slots = [
        planned_slot(r, decided.get(r.info.identity, Disposition.CREATE), existing.get(r.info.identity))
        for r in counts.listed
    ]
    return DryRun(
        backfill=view,
        runs=slots,
        truncated=counts.total > len(slots) or counts.cut,
        planned_exact=not counts.cut,
        summary=summary,
    )
