"""A dry run's plan: the first slots listed, and the whole plan counted by what would happen.

A planning job (see ``_jobs``): it steps the plan once under an :class:`Allowance`, looking
each slot's logical date up in the dispositions of the runs that already exist (decided by
the caller, which owns Airflow's rules); a slot with no run there would be created.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from sidecar.planning._budget import Allowance
from sidecar.planning._plan import BackfillPlan, PlannedRun
from sidecar.vocabulary import Disposition

__all__ = ["PlanCounts", "count_plan", "plan_window"]

_TO_RUN = (Disposition.CREATE, Disposition.REPROCESS)


@dataclass(frozen=True)
class PlanCounts:
    """A plan's first slots, its size, and its slots counted by disposition."""

    listed: list[PlannedRun] = field(default_factory=list)
    """The first ``keep`` slots, in plan order."""
    total: int = 0
    """Slots in the plan; ``most + 1`` when it has more than ``most``; a lower bound when ``cut``."""
    cut: bool = False
    """The planning budget ran out before the plan's end."""
    by_disposition: dict[Disposition, int] = field(default_factory=dict)
    """Slots counted by disposition (every slot of the plan when ``counted_all``)."""
    counted_all: bool = True
    """False when the counts stop short (budget, over ``most`` slots, or a slot that the runs read
    cannot decide): they are then lower bounds."""
    first: PlannedRun | None = None
    """The first slot that would run (create or reprocess)."""
    last: PlannedRun | None = None
    """The last slot that would run."""


def plan_window(plan: BackfillPlan, allowance: Allowance) -> tuple[dt.datetime, dt.datetime] | None:
    """The earliest and latest identities (logical or partition dates) of the plan's runs; None for an
    empty plan (a planning job).

    Not always inside ``[from_date, to_date]``: a trigger timetable with an interval dates its
    runs at the interval's start, before the trigger. Each end is one step of the plan (the
    first run forwards, and backwards).
    """
    ends = []
    for reverse in (False, True):
        one = dataclasses.replace(plan, reverse=reverse)
        run = next(iter(allowance.iterate(one.runs())), None)
        if run is None:
            return None
        ends.append(run.info.identity)
    return ends[0], ends[1]


def count_plan(
    plan: BackfillPlan,
    existing: Mapping[dt.datetime, Disposition],
    window: tuple[dt.datetime, dt.datetime],
    keep: int,
    most: int,
    allowance: Allowance,
) -> PlanCounts:
    """List the first ``keep`` slots and count up to ``most`` (a planning job: see ``_offload``).

    ``existing`` holds the dispositions of the runs found with a logical date inside
    ``window`` (``[first, last]``); a slot outside it cannot be decided from them, so it makes
    the counts inexact rather than wrong.
    """
    by = dict.fromkeys(Disposition, 0)
    listed: list[PlannedRun] = []
    first: PlannedRun | None = None
    last: PlannedRun | None = None
    decided = True
    seen = 0
    low, high = window
    size = plan.count() if plan.counts_fast else None
    if size is not None and size > most:  # over the limit: list, but do not step millions of slots
        runs = plan.runs()
        for run in allowance.iterate(runs):
            if len(listed) >= keep:
                break
            listed.append(run)
        return PlanCounts(listed=listed, total=most + 1, cut=allowance.cut, counted_all=False)
    for run in allowance.iterate(plan.runs()):
        seen += 1
        if seen <= keep:
            listed.append(run)
        if seen > most:
            if seen >= keep:
                break
            continue  # still listing: only the first ``most`` slots are counted
        date = run.info.identity
        if not low <= date <= high:
            decided = False
        disposition = existing.get(date, Disposition.CREATE)
        by[disposition] += 1
        if disposition in _TO_RUN:
            if first is None:
                first = run
            last = run
    cut = allowance.cut
    total = size if size is not None else min(seen, most + 1)
    return PlanCounts(
        listed=listed,
        total=total,
        cut=cut and size is None,
        by_disposition={d: n for d, n in by.items() if n},
        counted_all=decided and not cut and seen <= most,
        first=first,
        last=last,
    )
