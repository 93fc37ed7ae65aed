"""A dry run's plan: the first slots listed, and the whole plan counted by what would happen.

A planning job (see ``_jobs``), under an :class:`Allowance`. Each slot's identity (logical
date) is looked up in the dispositions of the runs that already exist (decided by the
caller, which owns Airflow's rules); a slot with no run there would be created.

An evenly spaced plan (a :class:`Grid`) is counted arithmetically: its size is known, and
an existing run is one of its slots when its date lies a whole number of steps from the
first slot, inside the plan; so the cost is that of the runs read, not of the slots (a
century of an hourly DAG in UTC is 876,600 slots). Any other plan (a cron in a zone with
daylight saving, events, partitions) is stepped slot by slot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from sidecar.planning._budget import Allowance
from sidecar.planning._plan import BackfillPlan, Grid, PlannedRun
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
    first run forwards, and backwards), or for an evenly spaced plan its grid's ends.
    """
    grid = plan.grid
    if grid is not None:  # no step: the grid's ends (and its cached check serves count_plan)
        return None if grid.size == 0 else (grid.info(0).identity, grid.info(grid.size - 1).identity)
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
    the counts inexact rather than wrong. An evenly spaced plan is counted without stepping
    (see the module), with the same result as stepping it.
    """
    grid = plan.grid
    if grid is not None:
        return _count_grid(plan, grid, existing, window, keep, most, allowance)
    by = dict.fromkeys(Disposition, 0)
    listed: list[PlannedRun] = []
    first: PlannedRun | None = None
    last: PlannedRun | None = None
    decided = True
    seen = 0
    low, high = window
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
    return PlanCounts(
        listed=listed,
        total=min(seen, most + 1),
        cut=cut,
        by_disposition={d: n for d, n in by.items() if n},
        counted_all=decided and not cut and seen <= most,
        first=first,
        last=last,
    )


def _count_grid(
    plan: BackfillPlan,
    grid: Grid,
    existing: Mapping[dt.datetime, Disposition],
    window: tuple[dt.datetime, dt.datetime],
    keep: int,
    most: int,
    allowance: Allowance,
) -> PlanCounts:
    """:func:`count_plan` of an evenly spaced plan: a step per listed slot and per existing run,
    none per slot of the plan.

    The slots counted are the first ``most`` in plan order: the indexes ``[start, stop)`` of
    the grid (its latest ones when the plan runs backwards).
    """
    listed = list(itertools.islice(allowance.iterate(plan.runs()), keep))
    counted = min(grid.size, most)
    start, stop = (grid.size - counted, grid.size) if grid.reverse else (0, counted)
    by = dict.fromkeys(Disposition, 0)
    skipped: set[int] = set()  # indexes of the counted slots that would not run
    for date, disposition in allowance.iterate(existing.items()):
        index = grid.position(date)
        if index is None or not start <= index < stop:
            continue  # not one of the counted slots (off the grid, or outside them)
        by[disposition] += 1
        if disposition not in _TO_RUN:
            skipped.add(index)
    total = grid.size if grid.size <= most else most + 1
    if allowance.cut:  # some existing runs not looked at: no count but zero is a lower bound
        return PlanCounts(listed=listed, total=total, counted_all=False)
    by[Disposition.CREATE] += counted - sum(by.values())  # a slot with no run is created
    low, high = window
    decided = counted == 0 or (low <= grid.info(start).identity and grid.info(stop - 1).identity <= high)
    # The earliest and latest slots to run: each search passes at most every skipped slot.
    earliest = next((i for i in range(start, stop) if i not in skipped), None)
    latest = next((i for i in reversed(range(start, stop)) if i not in skipped), None)
    if earliest is None or latest is None:
        first = last = None
    elif grid.reverse:  # plan order is latest first
        first, last = grid.run(latest), grid.run(earliest)
    else:
        first, last = grid.run(earliest), grid.run(latest)
    return PlanCounts(
        listed=listed,
        total=total,
        by_disposition={d: n for d, n in by.items() if n},
        counted_all=decided and grid.size <= most,
        first=first,
        last=last,
    )
