"""Planning jobs: what the engine runs off its event loop, each step under an :class:`Allowance`.

Each job is a module-level function ``job(*args, allowance)`` over a :class:`BackfillPlan`
(so that a worker process can unpickle it by name) that steps through the allowance and
returns plain data, reporting a cut short by the budget rather than raising.
"""

from __future__ import annotations

import itertools

from sidecar.planning._bounds import runs_upper_bound
from sidecar.planning._budget import Allowance
from sidecar.planning._plan import BackfillPlan, PlannedRun

__all__ = ["EXACT_COUNT_BUDGET", "first_sizes", "full_count", "pending_runs", "plan_slots"]

#: Plans of at most this many runs are counted exactly before creation even when they must be
#: stepped, if that fits the job's allowance; longer ones are counted in the background.
EXACT_COUNT_BUDGET = 200

#: Counting stops past this many runs (beyond any limit on runs per backfill).
_COUNT_CEILING = 10**9


def first_sizes(plan: BackfillPlan, limit: int, allowance: Allowance) -> tuple[int, int | None, int, bool]:
    """``(runs counted up to EXACT_COUNT_BUDGET + 1, exact count or None, upper bound, cut)``.

    ``cut``: the budget ran out before the bound was known (a planning job: see ``_offload``).
    A plan that must be stepped is counted exactly here only while that stays within the
    allowance (short plans, a few milliseconds): creation must not wait for a planning
    worker, which a loaded machine may starve (issue 14: 6-11 s for a DST-zone plan whose
    first 200 slots took 50 ms of croniter); longer ones are counted in the background.
    """
    if plan.counts_fast:
        total = plan.count()
        return min(total, 1), total, total, False
    small, complete = _count_while_allowed(plan, allowance, EXACT_COUNT_BUDGET + 1)
    if complete and small <= EXACT_COUNT_BUDGET:
        return small, small, small, False  # a short plan (or an empty one): stepped at once
    minutes = (plan.to_date - plan.from_date).total_seconds() / 60
    bound = runs_upper_bound(plan.timetable, plan.from_date, plan.to_date)
    at_most = min(int(minutes) + 2, bound if bound is not None else limit + 1)  # at most one run a minute
    if at_most > limit:
        at_most = allowance.count(plan.runs(), limit + 1)
    return small, None, at_most, allowance.cut


def _count_while_allowed(plan: BackfillPlan, allowance: Allowance, at_most: int) -> tuple[int, bool]:
    """``(runs counted up to at_most, whether that count is complete)``: counting stops
    without a cut when the allowance runs out (what is left is counted in the background)."""
    count = 0
    for _ in itertools.islice(plan.runs(), at_most):
        count += 1
        if count < at_most and allowance.spent():
            return count, False
    return count, True


def pending_runs(
    plan: BackfillPlan, resume: PlannedRun | None, after_ordinal: int, limit: int, allowance: Allowance
) -> tuple[list[PlannedRun], bool]:
    """Up to ``limit`` runs of ``plan`` past ``after_ordinal``, stepping on from ``resume``,
    and whether the budget ran out first (a planning job: see ``_offload``)."""
    runs = (r for r in allowance.iterate(plan.runs(after=resume)) if r.sort_ordinal > after_ordinal)
    return list(itertools.islice(runs, limit)), allowance.cut


def full_count(plan: BackfillPlan, allowance: Allowance) -> int | None:
    """The plan's size, None if stopped (a planning job: see ``_offload``)."""
    count = plan.count() if plan.counts_fast else allowance.count(plan.runs(), _COUNT_CEILING)
    return None if allowance.cut else count


def plan_slots(
    plan: BackfillPlan, limit: int, most: int, allowance: Allowance
) -> tuple[list[PlannedRun], int, bool]:
    """``(the first runs up to limit, the count or its lower bound, whether the count is exact)``.

    A planning job (see ``_offload``): it may run in a worker process.
    """
    runs = list(itertools.islice(allowance.iterate(plan.runs()), limit + 1))
    if allowance.cut:
        return runs[:limit], len(runs), False
    if len(runs) <= limit:
        return runs, len(runs), True
    if plan.counts_fast:
        return runs[:limit], min(plan.count(), most + 1), True
    after = runs[-1]
    more = allowance.count(plan.runs(after=after), most + 1 - len(runs))
    return runs[:limit], len(runs) + more, not allowance.cut
