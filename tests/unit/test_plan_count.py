"""``BackfillPlan.count()``: computed counts equal enumeration; planning huge ranges stays small."""

from __future__ import annotations

import datetime as dt
import itertools
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.planning import BackfillPlan, parse_timetable
from sidecar.planning._plan import uniform_step

UTC = dt.UTC
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)


def cron_trigger(expr: str, tz: Any, interval: float) -> dict[str, Any]:
    return {
        "__type": "airflow.timetables.trigger.CronTriggerTimetable",
        "__var": {"expression": expr, "timezone": tz, "interval": interval, "run_immediately": False},
    }


def cron_interval(expr: str, tz: Any) -> dict[str, Any]:
    return {
        "__type": "airflow.timetables.interval.CronDataIntervalTimetable",
        "__var": {"expression": expr, "timezone": tz},
    }


def delta_trigger(delta: float, interval: float) -> dict[str, Any]:
    return {
        "__type": "airflow.timetables.trigger.DeltaTriggerTimetable",
        "__var": {"delta": delta, "interval": interval},
    }


def delta_interval(delta: float) -> dict[str, Any]:
    return {"__type": "airflow.timetables.interval.DeltaDataIntervalTimetable", "__var": {"delta": delta}}


crons = st.sampled_from(["@hourly", "@daily", "0 * * * *", "17 * * * *", "30 5 * * *", "0 0 * * *"])
zones = st.sampled_from(["UTC", 0, 3600, -16200, "Europe/Amsterdam", "America/New_York"])
seconds = st.sampled_from([60.0, 900.0, 3600.0, 5400.0, 86400.0, 43200.0])
intervals = st.sampled_from([0.0, 3600.0, 86400.0])
schedules = st.one_of(
    st.builds(cron_trigger, crons, zones, intervals),
    st.builds(cron_interval, crons, zones),
    st.builds(delta_trigger, seconds, intervals),
    st.builds(delta_interval, seconds),
    st.builds(cron_trigger, st.sampled_from(["0 0 1 * *", "0 0 * * 1", "*/20 * * * *"]), zones, intervals),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoded=schedules,
    start_minutes=st.integers(0, 60 * 24 * 30),
    length_minutes=st.integers(0, 60 * 24 * 20),
    cutoff_minutes=st.integers(-60 * 24 * 3, 60 * 24 * 60),
    reverse=st.booleans(),
)
def test_computed_plan_equals_the_stepped_plan(
    encoded: dict[str, Any], start_minutes: int, length_minutes: int, cutoff_minutes: int, reverse: bool
) -> None:
    from_date = BASE + dt.timedelta(minutes=start_minutes)
    to_date = from_date + dt.timedelta(minutes=length_minutes)
    cutoff = from_date + dt.timedelta(minutes=cutoff_minutes)
    plan = BackfillPlan(parse_timetable(encoded, dag_id="d"), from_date, to_date, reverse, cutoff)
    stepped = _stepped(plan)
    expected = list(stepped.runs())
    assert plan.count() == len(expected)
    assert list(plan.runs()) == expected
    if len(expected) >= 2:
        middle = expected[len(expected) // 2]
        assert list(plan.runs(after=middle)) == list(stepped.runs(after=middle))


def _stepped(plan: BackfillPlan) -> BackfillPlan:
    """The same plan, forced onto the timetable's own stepping (the reference)."""
    reference = BackfillPlan(plan.timetable, plan.from_date, plan.to_date, plan.reverse, plan.cutoff)
    reference.__dict__["_uniform"] = None  # pre-fill the cached property: no arithmetic path
    return reference


def test_uniform_steps_are_recognised() -> None:
    def step(encoded: dict[str, Any]) -> dt.timedelta | None:
        return uniform_step(parse_timetable(encoded, dag_id="d"))

    assert step(cron_trigger("@hourly", "UTC", 0.0)) == dt.timedelta(hours=1)
    assert step(cron_interval("30 5 * * *", 7200)) == dt.timedelta(days=1)
    assert step(delta_trigger(900.0, 0.0)) == dt.timedelta(minutes=15)
    assert step(cron_trigger("@daily", "Europe/Amsterdam", 0.0)) is None  # DST: not even
    assert step(cron_interval("0 0 1 * *", "UTC")) is None  # months vary


def test_ten_million_hourly_slots_counted_without_enumerating() -> None:
    start = dt.datetime(1000, 1, 1, tzinfo=UTC)
    plan = BackfillPlan(
        parse_timetable(cron_trigger("@hourly", "UTC", 0.0), dag_id="d"),
        start,
        start + dt.timedelta(hours=10_000_000 - 1),
        False,
        dt.datetime(3000, 1, 1, tzinfo=UTC),
    )
    assert plan.count() == 10_000_000


@pytest.mark.parametrize(("stepped", "slots"), [(False, 100_000), (True, 30_000)])
def test_planning_a_ten_million_slot_plan_needs_constant_memory(stepped: bool, slots: int) -> None:
    start = dt.datetime(1000, 1, 1, tzinfo=UTC)
    plan = BackfillPlan(
        parse_timetable(delta_trigger(3600.0, 0.0), dag_id="d"),
        start,
        start + dt.timedelta(hours=10_000_000 - 1),
        False,
        dt.datetime(3000, 1, 1, tzinfo=UTC),
    )
    if stepped:
        plan = _stepped(plan)
    tracemalloc.start()
    try:
        last = None
        for run in itertools.islice(plan.runs(), slots):
            last = run
        # Resuming deep inside the plan (as the materialiser does after a batch) is also cheap.
        assert last is not None
        resumed = list(itertools.islice(plan.runs(after=last), 1_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resumed[0].sort_ordinal == slots + 1
    assert peak < 2_000_000, f"peak {peak} bytes while iterating"
