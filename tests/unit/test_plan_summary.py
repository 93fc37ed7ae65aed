"""A dry run's summary job and the estimate: counted plans equal the listed plan, for every schedule."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.engine._estimates import estimate, percentile
from sidecar.planning import Allowance, BackfillPlan, count_plan, parse_timetable, plan_window
from sidecar.vocabulary import Disposition
from tests.unit.test_plan_count import BASE, schedules

SKIPPED_OR_REPROCESSED = [Disposition.REPROCESS, Disposition.ALREADY_EXISTS, Disposition.IN_FLIGHT]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoded=schedules,
    start_minutes=st.integers(0, 60 * 24 * 30),
    length_minutes=st.integers(0, 60 * 24 * 10),
    reverse=st.booleans(),
    keep=st.integers(0, 30),
    most=st.integers(1, 400),
    data=st.data(),
)
def test_counts_equal_the_enumerated_plan(
    encoded: dict[str, Any],
    start_minutes: int,
    length_minutes: int,
    reverse: bool,
    keep: int,
    most: int,
    data: st.DataObject,
) -> None:
    from_date = BASE + dt.timedelta(minutes=start_minutes)
    to_date = from_date + dt.timedelta(minutes=length_minutes)
    plan = BackfillPlan(
        parse_timetable(encoded, dag_id="d"), from_date, to_date, reverse, to_date + dt.timedelta(days=400)
    )
    everything = list(itertools.islice(plan.runs(), most + 1))
    dates = [r.info.logical_date for r in everything]
    chosen = data.draw(st.lists(st.sampled_from(dates), unique=True) if dates else st.just([]))
    existing = {d: data.draw(st.sampled_from(SKIPPED_OR_REPROCESSED)) for d in chosen}

    window = plan_window(plan, Allowance(None))
    every_date = [r.info.logical_date for r in plan.runs()]
    assert window == ((min(every_date), max(every_date)) if every_date else None)
    counts = count_plan(plan, existing, window or (from_date, to_date), keep, most, Allowance(None))

    within = everything[:most]
    expected = Counter(existing.get(r.info.logical_date, Disposition.CREATE) for r in within)
    assert counts.listed == list(itertools.islice(plan.runs(), keep))
    assert counts.total == (plan.count() if plan.counts_fast and len(everything) <= most else len(everything))
    if len(everything) <= most:
        assert counts.counted_all
        assert {d: n for d, n in expected.items() if n} == counts.by_disposition
        to_run = [
            r
            for r in within
            if existing.get(r.info.logical_date, Disposition.CREATE)
            in (Disposition.CREATE, Disposition.REPROCESS)
        ]
        assert counts.first == (to_run[0] if to_run else None)
        assert counts.last == (to_run[-1] if to_run else None)
    else:
        assert not counts.counted_all
        assert counts.total == most + 1


def test_a_slot_outside_the_window_read_makes_the_counts_inexact() -> None:
    encoded = {"__type": "airflow.timetables.interval.DeltaDataIntervalTimetable", "__var": {"delta": 3600.0}}
    start = BASE
    plan = BackfillPlan(
        parse_timetable(encoded, dag_id="d"),
        start,
        start + dt.timedelta(hours=5),
        False,
        BASE + dt.timedelta(days=9),
    )
    narrow = (start, start + dt.timedelta(hours=2))
    assert not count_plan(plan, {}, narrow, 0, 100, Allowance(None)).counted_all
    assert count_plan(plan, {}, (start, start + dt.timedelta(hours=5)), 0, 100, Allowance(None)).counted_all


finite = st.floats(0, 10**6, allow_nan=False)


@given(values=st.lists(finite, min_size=1, max_size=50), q=st.floats(0, 1))
def test_percentile_lies_between_the_values_and_grows_with_q(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert min(values) <= p <= max(values)
    assert percentile(values, 0) == min(values)
    assert percentile(values, 1) == max(values)
    assert percentile(values, q) <= percentile(values, min(q + 0.1, 1.0)) + 1e-6


@given(
    values=st.lists(finite, min_size=1, max_size=50), left=st.integers(0, 10**6), at_once=st.integers(1, 500)
)
def test_estimate_spreads_the_runs_left_over_max_active_runs(
    values: list[float], left: int, at_once: int
) -> None:
    e = estimate(values, "history", left, at_once)
    assert e is not None
    assert e.sample_size == len(values)
    assert e.run_p50 <= e.run_p90
    assert e.remaining_p50 <= e.remaining_p90
    parallel = max(min(at_once, left), 1)
    assert e.remaining_p50.total_seconds() == pytest.approx(
        left * percentile(values, 0.5) / parallel, rel=1e-6, abs=1e-3
    )


def test_no_history_no_estimate() -> None:
    assert estimate([], "history", 10, 2) is None


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
