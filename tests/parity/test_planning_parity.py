"""Parity of sidecar.planning with Airflow 3.3.2 itself (Airflow is the oracle).

DAGs are built in-process with the Task SDK, serialized with ``DagSerialization``,
and the stored ``["dag"]["timetable"]`` dict is fed to ``parse_timetable``; the result
is compared with ``SerializedDAG.iter_dagrun_infos_between`` and ``_get_info_list``.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import tempfile
from typing import Any

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("airflow")

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))

from airflow.models.backfill import _get_info_list
from airflow.sdk import DAG
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.planning import BackfillPlan, parse_timetable, run_id_for
from tests.parity.airflow_compat import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    DagSerialization,
    DeltaDataIntervalTimetable,
    DeltaTriggerTimetable,
    MultipleCronTriggerTimetable,
)

UTC = dt.UTC
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Zurich",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Santiago",
]
# Instants near DST transitions (and a leap day / month ends) to anchor ranges around.
ANCHORS = [
    dt.datetime(2024, 3, 10, 7, tzinfo=UTC),  # US spring forward
    dt.datetime(2024, 11, 3, 6, tzinfo=UTC),  # US fall back
    dt.datetime(2024, 3, 31, 1, tzinfo=UTC),  # EU spring forward
    dt.datetime(2024, 10, 27, 1, tzinfo=UTC),  # EU fall back
    dt.datetime(2024, 4, 6, 15, tzinfo=UTC),  # AU / Lord Howe / Chatham fall back
    dt.datetime(2024, 10, 5, 16, tzinfo=UTC),  # AU spring forward
    dt.datetime(2024, 9, 7, 4, tzinfo=UTC),  # Santiago spring forward
    dt.datetime(2024, 2, 29, tzinfo=UTC),
    dt.datetime(2025, 1, 31, tzinfo=UTC),
]


def examples(n: int) -> settings:
    return settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, max_examples=n)


def serialize(schedule: Any) -> tuple[dict[str, Any], Any]:
    dag = DAG("parity", schedule=schedule)
    data = DagSerialization.to_dict(dag)
    # A copy: 3.1's decode_relativedelta rewrites the dict it decodes (a weekday list becomes an object).
    return data["dag"]["timetable"], DagSerialization.from_dict(copy.deepcopy(data))


def airflow_infos(sdag: Any, lo: dt.datetime, hi: dt.datetime) -> list[tuple[dt.datetime, ...]]:
    return [
        (i.data_interval.start, i.data_interval.end, i.run_after)
        for i in sdag.iter_dagrun_infos_between(lo, hi)
    ]


def check(schedule: Any, lo: dt.datetime, hi: dt.datetime, pick: int) -> None:
    encoded, sdag = serialize(schedule)
    tt = parse_timetable(encoded, dag_id="parity")
    assert tt.summary == sdag.timetable.summary
    expected = airflow_infos(sdag, lo, hi)
    mine = list(tt.iter_infos(lo, hi))
    got = [(i.data_interval_start, i.data_interval_end, i.run_after) for i in mine]
    assert got == expected
    assert all(i.logical_date == i.data_interval_start for i in mine)
    # a tick on the lower bound keeps the bound's offset in Airflow's run id, and in ours
    assert [run_id_for(i) for i in mine] == [f"backfill__{e[2].isoformat()}" for e in expected]
    assert list(tt.iter_infos_reverse(lo, hi)) == mine[::-1]
    if mine:
        k = pick % len(mine)
        assert list(tt.iter_infos(lo, hi, after=mine[k])) == mine[k + 1 :]
        assert list(tt.iter_infos_reverse(lo, hi, before=mine[k])) == mine[:k][::-1]
        cutoff = mine[k].data_interval_end
        for reverse in (False, True):
            plan = BackfillPlan(tt, lo, hi, reverse, cutoff)
            want = [i for i in mine if i.data_interval_end < cutoff]
            want = want[::-1] if reverse else want
            runs = list(plan.runs())
            assert [r.info for r in runs] == want
            assert [r.sort_ordinal for r in runs] == list(range(1, len(want) + 1))
            assert [r.run_id for r in runs] == [run_id_for(i) for i in want]
            if runs:
                m = pick % len(runs)
                assert list(plan.runs(after=runs[m])) == runs[m + 1 :]


MINUTE = st.sampled_from(["0", "30", "*/15", "0,30", "5-10", "*/20", "45", "*"])
HOUR = st.sampled_from(["*", "0", "1", "2", "3", "*/2", "1-3", "0,12", "23"])
DOM = st.sampled_from(["*", "*", "1", "15", "29", "31", "*/10", "28-31"])
MONTH = st.sampled_from(["*", "*", "2", "*/3", "3,11", "10", "4,9"])
DOW = st.sampled_from(["*", "*", "*", "0", "1-5", "6"])
PRESETS = st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually"])


@st.composite
def cron_exprs(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(PRESETS)
    minute, hour = draw(MINUTE), draw(HOUR)
    if minute == "*" and hour == "*":
        minute = "*/30"
    return " ".join([minute, hour, draw(DOM), draw(MONTH), draw(DOW)])


@st.composite
def ranges(draw: st.DrawFn, max_days: int) -> tuple[dt.datetime, dt.datetime]:
    anchor = draw(st.sampled_from(ANCHORS))
    lo = anchor + dt.timedelta(minutes=draw(st.integers(-3 * 24 * 60, 2 * 24 * 60)))
    if draw(st.booleans()):
        lo = lo.replace(second=0, microsecond=0, minute=draw(st.sampled_from([0, 0, 15, 30])))
    length = dt.timedelta(minutes=draw(st.integers(0, max_days * 24 * 60)))
    zone = draw(st.sampled_from([UTC, UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]))
    return lo.astimezone(zone), (lo + length).astimezone(zone)


def expression_max_days(expr: str) -> int:
    return 3 if expr.split()[0:1] and expr.split()[1:2] == ["*"] else 40


@examples(220)
@given(expr=cron_exprs(), zone=st.sampled_from(ZONES), data=st.data(), pick=st.integers(0, 10**6))
def test_cron_trigger_parity(expr: str, zone: str, data: st.DataObject, pick: int) -> None:
    lo, hi = data.draw(ranges(expression_max_days(expr)))
    interval = data.draw(st.sampled_from([dt.timedelta(0), dt.timedelta(hours=1), relativedelta(months=1)]))
    check(CronTriggerTimetable(expr, timezone=zone, interval=interval), lo, hi, pick)


@examples(180)
@given(expr=cron_exprs(), zone=st.sampled_from(ZONES), data=st.data(), pick=st.integers(0, 10**6))
def test_cron_data_interval_parity(expr: str, zone: str, data: st.DataObject, pick: int) -> None:
    lo, hi = data.draw(ranges(expression_max_days(expr)))
    check(CronDataIntervalTimetable(expr, timezone=zone), lo, hi, pick)


@examples(60)
@given(
    exprs=st.lists(cron_exprs(), min_size=1, max_size=3),
    zone=st.sampled_from(ZONES),
    data=st.data(),
    pick=st.integers(0, 10**6),
)
def test_multiple_cron_parity(exprs: list[str], zone: str, data: st.DataObject, pick: int) -> None:
    lo, hi = data.draw(ranges(min(expression_max_days(e) for e in exprs)))
    check(MultipleCronTriggerTimetable(*exprs, timezone=zone), lo, hi, pick)


DELTAS = st.sampled_from(
    [
        dt.timedelta(hours=1),
        dt.timedelta(minutes=90),
        dt.timedelta(hours=12),
        dt.timedelta(days=1),
        dt.timedelta(days=7),
        dt.timedelta(seconds=86399, microseconds=500000),
        relativedelta(months=1),
        relativedelta(months=1, day=31),
        relativedelta(years=1),
        relativedelta(days=1, hours=2),
        relativedelta(weeks=1, weekday=0),
    ]
)


@examples(120)
@given(delta=DELTAS, data=st.data(), pick=st.integers(0, 10**6), trigger=st.booleans())
def test_delta_parity(delta: Any, data: st.DataObject, pick: int, trigger: bool) -> None:
    lo, hi = data.draw(ranges(400 if isinstance(delta, relativedelta) else 40))
    if trigger:
        interval = data.draw(
            st.sampled_from([dt.timedelta(0), dt.timedelta(hours=2), relativedelta(months=1)])
        )
        check(DeltaTriggerTimetable(delta, interval=interval), lo, hi, pick)
    else:
        check(DeltaDataIntervalTimetable(delta), lo, hi, pick)


@pytest.mark.parametrize(
    "schedule",
    ["@daily", "0 0 * * *", dt.timedelta(hours=12), CronDataIntervalTimetable("0 0 * * *", timezone="UTC")],
)
def test_get_info_list_parity(schedule: Any) -> None:
    encoded, sdag = serialize(schedule)
    lo, hi = dt.datetime(2025, 1, 1, 12, tzinfo=UTC), dt.datetime(2025, 1, 3, tzinfo=UTC)
    for reverse in (False, True):
        # A list: 3.1 returns reversed() (an iterator) for reverse=True.
        expected = list(_get_info_list(from_date=lo, to_date=hi, reverse=reverse, dag=sdag))
        plan = BackfillPlan(parse_timetable(encoded, dag_id="x"), lo, hi, reverse, dt.datetime.now(UTC))
        runs = list(plan.runs())
        assert [(r.info.data_interval_start, r.info.data_interval_end, r.info.run_after) for r in runs] == [
            (i.data_interval.start, i.data_interval.end, i.run_after) for i in expected
        ]
        assert [r.run_id for r in runs] == [f"backfill__{i.run_after.isoformat()}" for i in expected]


@pytest.mark.parametrize("schedule", [None, "@once", "@continuous"])
def test_non_periodic_parity(schedule: Any) -> None:
    from sidecar.errors import NonPeriodicSchedule

    dag = DAG("np", schedule=schedule, max_active_runs=1)
    encoded = DagSerialization.to_dict(dag)["dag"]["timetable"]
    with pytest.raises(NonPeriodicSchedule, match="np has a non-periodic schedule"):
        parse_timetable(encoded, dag_id="np")
