"""The dry run: the slots a create would write, listed and counted under a planning budget.

A dry run lists at most ``limit`` slots (10,000 by default) and counts the plan up to the
limit on runs per backfill. Both steps run in a :class:`PlanningPool` worker, off the event
loop, with the pool's CPU budget per call, and stop when the caller goes. Over budget the
dry run answers with what it has: the slots listed so far, ``truncated`` set, and
``progress.planned`` marked as a lower bound (``planned_count_is_lower_bound``) when the
count was cut short. Existing runs are looked up afterwards, in their own short read.
"""

from __future__ import annotations

import datetime as dt

from sidecar.engine._config import Parts
from sidecar.engine._model import BackfillSpec, BackfillView, DryRun, Progress
from sidecar.engine._offload import PlanningPool
from sidecar.engine._reads import planned_slot
from sidecar.planning import BackfillPlan, plan_slots
from sidecar.store import decide, find_existing_runs
from sidecar.vocabulary import State

__all__ = ["dry_run"]


async def dry_run(
    parts: Parts, pool: PlanningPool, spec: BackfillSpec, plan: BackfillPlan, now: dt.datetime, limit: int
) -> DryRun:
    """The plan a create would write, each slot with what would happen to it."""
    limit = min(limit, parts.config.dry_run_limit)
    most = parts.config.max_runs_per_backfill
    runs, planned, exact = await pool.run(plan_slots, plan, limit, most)
    existing = await parts.tx.read(lambda conn: find_existing_runs(conn, spec.dag_id, runs))
    slots = []
    for run in runs:
        found = existing.get(run.info.identity)
        slots.append(planned_slot(run, decide(found, spec.reprocess_behavior), found))
    view = BackfillView(
        id=0,
        dag_id=spec.dag_id,
        from_date=spec.from_date,
        to_date=spec.to_date,
        dag_run_conf=spec.dag_run_conf,
        reprocess_behavior=spec.reprocess_behavior,
        max_active_runs=spec.max_active_runs,
        run_backwards=spec.run_backwards,
        mode=spec.mode,
        is_paused=False,
        state=State.ACTIVE,
        progress=Progress(planned=planned),
        triggering_user_name=spec.triggering_user_name,
        created_at=now,
        updated_at=now,
        completed_at=None,
    )
    return DryRun(backfill=view, runs=slots, truncated=planned > len(slots) or not exact, planned_exact=exact)
