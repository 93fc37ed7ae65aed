"""Range bounds with a UTC offset: run ids and dates equal Airflow 3.3.2's own (Airflow is the oracle).

Airflow takes the caller's datetimes as given (``timezone.coerce_datetime`` keeps an
offset, a naive value is read in ``[core] default_timezone``, UTC here), and a run that
falls exactly on the lower bound keeps that offset in its run id. The sidecar's API carries
the instant and the offset apart (a protobuf Timestamp has no offset); the plan is built
from the two put back together (:func:`sidecar.planning.with_offset`), as the engine does.
Compared with ``_get_info_list`` and ``DagRun.generate_run_id`` over every built-in
timetable, offsets from -12:00 to +14:00 (odd minutes too) and naive bounds, forwards and
backwards, and resumed after any run through the stored cursor (a batch boundary).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from typing import Any

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("airflow")

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))

from airflow._shared.timezones.timezone import coerce_datetime
from airflow.models.backfill import _get_info_list
from airflow.models.dagrun import DagRun
from airflow.sdk import DAG
from airflow.utils.types import DagRunType
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.engine._plans import cursor_of, run_of
from sidecar.planning import BackfillPlan, parse_timetable, utc_offset_seconds, with_offset
from tests.parity.airflow_compat import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    DagSerialization,
    DeltaDataIntervalTimetable,
    DeltaTriggerTimetable,
    MultipleCronTriggerTimetable,
)

UTC = dt.UTC
#: "Now" for both: Airflow's ``_get_info_list`` filters on the real clock, the plan on its cutoff.
NOW = dt.datetime.now(UTC)

#: An EventsTimetable, encoded by hand: 3.3.2 cannot serialize one (its encoder omits the
#: ``_summary`` its decoder reads), so Airflow's side is decoded from this encoding.
EVENTS = {
    "__type": "airflow.timetables.events.EventsTimetable",
    "__var": {
        "event_dates": [
            "2024-01-01T00:00:00+05:30",
            "2024-03-31T02:30:00+01:00",
            "2024-07-04T09:00:00-04:00",
            "2024-10-01T00:00:00+00:00",
            "2025-01-01T05:45:00+05:45",
        ],
        "restrict_to_events": False,
        "description": None,
        "_summary": "5 events",
    },
}

SCHEDULES: list[Any] = [
    "@daily",
    "@hourly",
    "0 0 * * *",
    "30 5 * * *",
    "45 */2 * * *",
    "0 0 1 * *",
    CronTriggerTimetable("0 0 * * *", timezone="Asia/Kolkata", interval=dt.timedelta(hours=3)),
    CronTriggerTimetable("0 9 * * 1-5", timezone="America/New_York"),
    CronTriggerTimetable("0 0 1 * *", timezone="UTC", interval=relativedelta(months=1)),
    CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    CronDataIntervalTimetable("30 * * * *", timezone="Asia/Kathmandu"),
    CronDataIntervalTimetable("0 0 1 * *", timezone="Europe/Amsterdam"),
    MultipleCronTriggerTimetable("0 0 * * *", "30 5 * * *", timezone="UTC"),
    dt.timedelta(hours=12),
    dt.timedelta(minutes=90),
    DeltaTriggerTimetable(relativedelta(months=1)),
    DeltaTriggerTimetable(relativedelta(months=1, day=31), interval=dt.timedelta(hours=1)),
    DeltaDataIntervalTimetable(dt.timedelta(days=1)),
    DeltaDataIntervalTimetable(relativedelta(months=1)),
    # Events keep the offset they were written in (run ids show it), whatever the bounds'.
    EVENTS,
]

_SERIALIZED: dict[int, tuple[dict[str, Any], Any]] = {}


def serialized(index: int) -> tuple[dict[str, Any], Any]:
    if index not in _SERIALIZED:
        schedule = SCHEDULES[index]
        data = DagSerialization.to_dict(
            DAG(f"offsets_{index}", schedule="@daily" if schedule is EVENTS else schedule)
        )
        if schedule is EVENTS:
            data["dag"]["timetable"] = EVENTS
        _SERIALIZED[index] = data["dag"]["timetable"], DagSerialization.from_dict(data)
    return _SERIALIZED[index]


#: Offsets in minutes: -12:00 .. +14:00, whole hours, the common odd ones, and any minute.
OFFSETS = st.one_of(
    st.sampled_from([0, 330, 345, 525, 765, 840, -720, -570, -210, 60, -300]),
    st.integers(-12 * 60, 14 * 60),
)


@st.composite
def bounds(draw: st.DrawFn) -> dt.datetime:
    """A bound as a caller writes it: often exactly on a UTC tick or a local midnight, or naive."""
    day = dt.datetime(2024, 1, 1) + dt.timedelta(days=draw(st.integers(0, 400)))
    offset = dt.timezone(dt.timedelta(minutes=draw(OFFSETS)))
    how = draw(st.sampled_from(["utc tick", "local wall clock", "any minute", "naive"]))
    if how == "utc tick":  # an instant on a UTC hour (or half hour), written in the offset
        utc = day + dt.timedelta(hours=draw(st.integers(0, 23)), minutes=draw(st.sampled_from([0, 0, 30])))
        return utc.replace(tzinfo=UTC).astimezone(offset)
    wall = day + dt.timedelta(
        hours=draw(st.sampled_from([0, 0, 5, 9, 23])), minutes=draw(st.sampled_from([0, 30]))
    )
    if how == "any minute":
        wall += dt.timedelta(minutes=draw(st.integers(0, 24 * 60)), seconds=draw(st.sampled_from([0, 0, 7])))
    return wall if how == "naive" else wall.replace(tzinfo=offset)


def airflow_runs(sdag: Any, lo: dt.datetime, hi: dt.datetime, reverse: bool) -> list[tuple[Any, ...]]:
    """What Airflow's API route does with the bounds: coerce, enumerate, name each run."""
    infos = _get_info_list(
        from_date=coerce_datetime(lo), to_date=coerce_datetime(hi), reverse=reverse, dag=sdag
    )
    return [
        (
            DagRun.generate_run_id(
                run_type=DagRunType.BACKFILL_JOB, logical_date=i.logical_date, run_after=i.run_after
            ),
            i.logical_date,
            i.data_interval.start,
            i.data_interval.end,
            i.run_after,
        )
        for i in infos
        if i.data_interval.end < NOW
    ]


def as_sent(value: dt.datetime) -> dt.datetime:
    """The bound after the API: the instant (naive is UTC) rebuilt with the offset sent beside it."""
    instant = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return with_offset(instant.astimezone(UTC), utc_offset_seconds(value))


def check(index: int, lo: dt.datetime, hi: dt.datetime, pick: int) -> None:
    encoded, sdag = serialized(index)
    timetable = parse_timetable(encoded, dag_id="offsets")
    for reverse in (False, True):
        expected = airflow_runs(sdag, lo, hi, reverse)
        plan = BackfillPlan(timetable, as_sent(lo), as_sent(hi), reverse, NOW)
        runs = list(plan.runs())
        got = [
            (
                r.run_id,
                r.info.logical_date,
                r.info.data_interval_start,
                r.info.data_interval_end,
                r.info.run_after,
            )
            for r in runs
        ]
        assert got == expected, (SCHEDULES[index], lo, hi, reverse)
        if runs:  # resumed after any run, through the cursor a batch stores
            m = pick % len(runs)
            resumed = list(plan.runs(after=run_of(cursor_of(runs[m]))))
            assert [(r.sort_ordinal, r.run_id, r.info) for r in resumed] == [
                (r.sort_ordinal, r.run_id, r.info) for r in runs[m + 1 :]
            ]


@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, max_examples=250)
@given(
    index=st.integers(0, len(SCHEDULES) - 1),
    lo=bounds(),
    length=st.integers(0, 24 * 70),
    hi_offset=OFFSETS,
    pick=st.integers(0, 10**6),
)
def test_offset_run_ids_match_airflow(
    index: int, lo: dt.datetime, length: int, hi_offset: int, pick: int
) -> None:
    hi = (lo.replace(tzinfo=lo.tzinfo or UTC) + dt.timedelta(hours=length)).astimezone(
        dt.timezone(dt.timedelta(minutes=hi_offset))
    )
    check(index, lo, hi, pick)


@pytest.mark.parametrize("index", range(len(SCHEDULES)))
def test_first_run_on_the_bound_keeps_the_callers_offset(index: int) -> None:
    """The issue's case: ``backfill__2024-01-01T00:00:00+05:30`` for a tick on the lower bound."""
    lo = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    check(index, lo, lo + dt.timedelta(days=40), 3)
    check(index, lo.astimezone(UTC).replace(tzinfo=None), lo + dt.timedelta(days=40), 3)


def test_the_issues_example() -> None:
    # schedule=timedelta(hours=12) as Airflow 3 serialises it by default; spelled out, because
    # an earlier test module may have changed [scheduler] create_delta_data_intervals in-process.
    encoded = {
        "__type": "airflow.timetables.trigger.DeltaTriggerTimetable",
        "__var": {"delta": 43200.0, "interval": 0.0},
    }
    lo = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    plan = BackfillPlan(
        parse_timetable(encoded, dag_id="x"), as_sent(lo), as_sent(lo + dt.timedelta(days=1)), False, NOW
    )
    assert [r.run_id for r in plan.runs()][:2] == [
        "backfill__2024-01-01T00:00:00+05:30",
        "backfill__2024-01-01T06:30:00+00:00",
    ]
