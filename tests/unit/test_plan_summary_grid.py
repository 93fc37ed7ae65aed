"""The dry run's summary of an evenly spaced plan is counted arithmetically, exactly as stepping counts it.

The reference is the same plan forced onto the timetable's own steps (``_stepped``): every
field of the counts (listed slots, size, counts by disposition, exactness, first and last
slot to run) must be equal, for random evenly spaced schedules, bounds written in any
offset, cut-offs, both orders, limits, windows, reprocess behaviours and existing runs on the
grid, off it, and on it beyond the plan.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from sidecar.planning import Allowance, BackfillPlan, count_plan, parse_timetable, plan_window, with_offset
from sidecar.store import ExistingRun, decide
from sidecar.vocabulary import Disposition, ReprocessBehavior
from tests.unit.test_plan_count import (
    BASE,
    _stepped,
    cron_interval,
    cron_trigger,
    delta_interval,
    delta_trigger,
    intervals,
)

#: Schedules whose runs are evenly spaced on the UTC time line (no DST zone, no month or weekday).
even_crons = st.sampled_from(["@hourly", "@daily", "0 * * * *", "17 * * * *", "30 5 * * *", "* * * * *"])
fixed_zones = st.sampled_from(["UTC", 0, 3600, -16200, 19800])
even_seconds = st.sampled_from([60.0, 900.0, 3600.0, 5400.0, 43200.0, 86400.0, 90061.0])
even_schedules = st.one_of(
    st.builds(cron_trigger, even_crons, fixed_zones, intervals),
    st.builds(cron_interval, even_crons, fixed_zones),
    st.builds(delta_trigger, even_seconds, intervals),
    st.builds(delta_interval, even_seconds),
)
#: Offsets (seconds) a caller may write the range's bounds and the runs' dates in.
offsets = st.sampled_from([0, 3600, 19800, -16200, -3600 * 11])
states = st.sampled_from(["success", "failed", "running", "queued", None])


class Counting(Allowance):
    """An unlimited allowance that counts its steps."""

    def __init__(self) -> None:
        super().__init__(None)
        self.steps = 0

    def spent(self) -> bool:
        self.steps += 1
        return super().spent()


@st.composite
def existing_dates(draw: st.DrawFn, plan: BackfillPlan) -> list[dt.datetime]:
    """Dates of existing runs: slots of the plan, dates between them, slots beyond its ends."""
    grid = plan.grid
    assert grid is not None
    on = [grid.info(i).identity for i in range(grid.size)]
    step = grid.step
    beyond = [grid.first.identity + step * k for k in (-3, -2, -1, grid.size, grid.size + 1)]
    off_by = st.timedeltas(min_value=dt.timedelta(seconds=1), max_value=step - dt.timedelta(seconds=1))
    between = [d + draw(off_by) for d in draw(st.lists(st.sampled_from(on + beyond), max_size=5))]
    chosen = draw(st.lists(st.sampled_from(on), unique=True, max_size=40)) if on else []
    chosen += draw(st.lists(st.sampled_from(beyond), unique=True))
    return [with_offset(d, draw(offsets)) for d in chosen + between]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoded=even_schedules,
    start_minutes=st.integers(0, 60 * 24 * 30),
    length_minutes=st.integers(0, 60 * 24 * 4),
    cutoff_minutes=st.integers(-60 * 24 * 2, 60 * 24 * 8),
    from_offset=offsets,
    to_offset=offsets,
    reverse=st.booleans(),
    keep=st.integers(0, 30),
    behavior=st.sampled_from(ReprocessBehavior),
    data=st.data(),
)
def test_an_evenly_spaced_plan_is_counted_as_stepping_counts_it(
    encoded: dict[str, Any],
    start_minutes: int,
    length_minutes: int,
    cutoff_minutes: int,
    from_offset: int,
    to_offset: int,
    reverse: bool,
    keep: int,
    behavior: ReprocessBehavior,
    data: st.DataObject,
) -> None:
    from_date = with_offset(BASE + dt.timedelta(minutes=start_minutes), from_offset)
    to_date = with_offset(from_date + dt.timedelta(minutes=length_minutes), to_offset)
    cutoff = from_date + dt.timedelta(minutes=cutoff_minutes)
    plan = BackfillPlan(parse_timetable(encoded, dag_id="d"), from_date, to_date, reverse, cutoff)
    stepped = _stepped(plan)
    event("grid" if plan.grid is not None else "no grid")
    assume(plan.grid is not None)  # else count_plan steps both: nothing to compare
    # The limit on runs per backfill: below the plan's size (counts of its first slots), or not.
    most = data.draw(st.one_of(st.integers(1, plan.count() + 1), st.just(10_000_000)), label="most")
    existing = {
        date: decide(ExistingRun(id=1, run_id="r", state=data.draw(states)), behavior)
        for date in data.draw(existing_dates(plan))
    }
    found = plan_window(plan, Allowance(None)) or (from_date, to_date)
    windows = [found, (from_date, to_date), (found[0], found[1] - dt.timedelta(seconds=1))]
    window = data.draw(st.sampled_from(windows))

    counted = count_plan(plan, existing, window, keep, most, Allowance(None))
    assert counted == count_plan(stepped, existing, window, keep, most, Allowance(None))
    assert counted.total == min(plan.count(), most + 1)


def test_a_century_is_counted_in_steps_of_its_existing_runs_not_of_its_slots() -> None:
    end = dt.datetime(2025, 12, 31, tzinfo=dt.UTC)
    plan = BackfillPlan(
        parse_timetable(cron_interval("0 * * * *", "UTC"), dag_id="d"),
        end - dt.timedelta(days=36_525),
        end,
        False,
        end + dt.timedelta(days=1),
    )
    assert plan.grid is not None
    hours = [end - dt.timedelta(hours=h) for h in range(0, 20_000, 2)]  # every other slot of the last ones
    existing = dict.fromkeys(hours, Disposition.ALREADY_EXISTS) | {
        end + dt.timedelta(minutes=1): Disposition.IN_FLIGHT
    }
    allowance = Counting()
    window = plan_window(plan, Allowance(None))
    assert window is not None
    counts = count_plan(plan, existing, window, 100, 10_000_000, allowance)
    assert counts.total == plan.count() == 36_525 * 24 + 1
    assert counts.by_disposition == {
        Disposition.ALREADY_EXISTS: 10_000,
        Disposition.CREATE: counts.total - 10_000,
    }
    assert counts.counted_all
    assert counts.last is not None and counts.last.info.logical_date == end - dt.timedelta(hours=1)
    # One step per listed slot and per existing run (and the ends of each iteration): none per slot.
    assert allowance.steps <= 100 + len(existing) + 2
