"""Sizing before creation: a plan that must be stepped never sends creation to a planning worker.

Issue 14: stepping the first 200 slots of a DST-zone cron took 50 ms of croniter, past the
in-process allowance, so creation waited for a worker process that runs only on idle cores
(6-11 s on a loaded machine). Now what does not fit the allowance is counted later.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.planning import EXACT_COUNT_BUDGET, Allowance, BackfillPlan, first_sizes, parse_timetable

UTC = dt.UTC
CUTOFF = dt.datetime(2026, 1, 1, tzinfo=UTC)
AMSTERDAM_HOURLY = {
    "__type": "airflow.timetables.interval.CronDataIntervalTimetable",
    "__var": {"expression": "0 * * * *", "timezone": "Europe/Amsterdam"},
}


def _plan(start: dt.datetime, hours: int) -> BackfillPlan:
    timetable = parse_timetable(AMSTERDAM_HOURLY, dag_id="d")
    return BackfillPlan(timetable, start, start + dt.timedelta(hours=hours), False, CUTOFF)


def test_a_long_stepped_plan_is_sized_within_a_spent_allowance() -> None:
    plan = _plan(dt.datetime(1990, 1, 1, tzinfo=UTC), 100_000)
    allowance = Allowance(0.0)  # spent after the first step: nothing may be stepped beyond it
    first, planned, at_most, cut = first_sizes(plan, 10_000_000, allowance)
    assert not cut  # no worker process needed
    assert first >= 1 and planned is None  # counted in the background
    assert 100_000 <= at_most <= 10_000_000


@settings(max_examples=25, deadline=None)
@given(hours=st.integers(min_value=0, max_value=EXACT_COUNT_BUDGET + 50), budget=st.sampled_from([0.0, None]))
def test_a_count_before_creation_is_exact_or_left_to_the_background(hours: int, budget: float | None) -> None:
    plan = _plan(dt.datetime(2025, 3, 29, tzinfo=UTC), hours)  # across the spring DST change
    exact = sum(1 for _ in plan.runs())
    first, planned, at_most, cut = first_sizes(plan, 10_000_000, Allowance(budget))
    assert not cut
    assert (first == 0) == (exact == 0)
    assert planned in (None, exact)
    if budget is None and exact <= EXACT_COUNT_BUDGET:
        assert planned == exact  # an unlimited allowance counts every short plan at once
    assert at_most >= exact
