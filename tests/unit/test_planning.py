"""Hand-checked expectations for sidecar.planning (no Airflow needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sidecar.errors import FutureDateRange, InvalidDateRange, NonPeriodicSchedule, UnsupportedFeature
from sidecar.planning import BackfillPlan, DagRunInfo, parse_timetable, run_id_for, validate_range

UTC = dt.UTC
FROM = dt.datetime(2025, 1, 1, 12, tzinfo=UTC)
TO = dt.datetime(2025, 1, 3, tzinfo=UTC)
NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)


def d(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cron_trigger(expr: str, tz: Any = "UTC", interval: Any = 0.0) -> dict[str, Any]:
    return {
        "__type": "airflow.timetables.trigger.CronTriggerTimetable",
        "__var": {"expression": expr, "timezone": tz, "interval": interval, "run_immediately": False},
    }


def cron_interval(expr: str, tz: Any = "UTC") -> dict[str, Any]:
    return {
        "__type": "airflow.timetables.interval.CronDataIntervalTimetable",
        "__var": {"expression": expr, "timezone": tz},
    }


def delta_trigger(delta: Any, interval: Any = 0.0) -> dict[str, Any]:
    return {
        "__type": "airflow.timetables.trigger.DeltaTriggerTimetable",
        "__var": {"delta": delta, "interval": interval},
    }


def plan(encoded: dict[str, Any], reverse: bool = False, cutoff: dt.datetime = NOW) -> BackfillPlan:
    return BackfillPlan(parse_timetable(encoded, dag_id="d"), FROM, TO, reverse, cutoff)


def test_daily_cron_trigger() -> None:
    runs = list(plan(cron_trigger("@daily")).runs())
    assert [r.info.logical_date for r in runs] == [d(2025, 1, 2), d(2025, 1, 3)]
    assert all(r.info.data_interval_start == r.info.data_interval_end == r.info.run_after for r in runs)
    assert runs[0].run_id == "backfill__2025-01-02T00:00:00+00:00"
    assert [r.sort_ordinal for r in runs] == [1, 2]


def test_cron_data_interval_runid_uses_run_after() -> None:
    runs = list(plan(cron_interval("0 0 * * *")).runs())
    assert [r.info.logical_date for r in runs] == [d(2025, 1, 2), d(2025, 1, 3)]
    assert runs[0].info.data_interval_end == d(2025, 1, 3)
    assert runs[0].run_id == "backfill__2025-01-03T00:00:00+00:00"


def test_delta_trigger_no_alignment() -> None:
    runs = list(plan(delta_trigger(43200.0)).runs())
    assert [r.info.run_after for r in runs] == [
        d(2025, 1, 1, 12),
        d(2025, 1, 2),
        d(2025, 1, 2, 12),
        d(2025, 1, 3),
    ]


def test_new_york_cron_rendered_in_utc() -> None:
    runs = list(plan(cron_trigger("0 3 * * *", "America/New_York")).runs())
    assert [r.run_id for r in runs] == ["backfill__2025-01-02T08:00:00+00:00"]


def test_reverse_and_resume() -> None:
    p = plan(delta_trigger(43200.0), reverse=True)
    runs = list(p.runs())
    assert [r.info.run_after for r in runs] == [
        d(2025, 1, 3),
        d(2025, 1, 2, 12),
        d(2025, 1, 2),
        d(2025, 1, 1, 12),
    ]
    assert [r.sort_ordinal for r in runs] == [1, 2, 3, 4]
    assert list(p.runs(after=runs[1])) == runs[2:]
    assert p.count() == 4


def test_cutoff_filter() -> None:
    p = plan(cron_interval("0 0 * * *"), cutoff=d(2025, 1, 4))
    assert [r.info.logical_date for r in p.runs()] == [d(2025, 1, 2)]
    p = plan(cron_interval("0 0 * * *"), reverse=True, cutoff=d(2025, 1, 4))
    assert [r.info.logical_date for r in p.runs()] == [d(2025, 1, 2)]


def test_run_id_for() -> None:
    t = d(2025, 1, 2)
    assert run_id_for(DagRunInfo(t, t, t, t)) == "backfill__2025-01-02T00:00:00+00:00"


@pytest.mark.parametrize(
    "type_path",
    [
        "NullTimetable",
        "OnceTimetable",
        "ContinuousTimetable",
        "AssetTriggeredTimetable",
        "PartitionedAtRuntime",
    ],
)
def test_non_periodic(type_path: str) -> None:
    with pytest.raises(
        NonPeriodicSchedule, match=r"^d1 has a non-periodic schedule that does not support backfills$"
    ):
        parse_timetable({"__type": f"airflow.timetables.simple.{type_path}", "__var": {}}, dag_id="d1")


@pytest.mark.parametrize(
    "encoded",
    [
        {"__type": "my_plugin.MyTimetable", "__var": {}},
        {
            "__type": "airflow.timetables.trigger.CronPartitionTimetable",
            "__var": {"expression": "@daily", "timezone": "UTC", "run_offset": 0, "key_format": 4},
        },
        {
            "__type": "airflow.timetables.assets.AssetOrTimeSchedule",
            "__var": {
                "asset_condition": {},
                "timetable": {
                    "__type": "airflow.timetables.trigger.CronPartitionTimetable",
                    "__var": {"expression": "@daily", "timezone": "UTC", "run_offset": 0, "key_format": "%Y"},
                },
            },
        },
        delta_trigger(0.0),
        cron_trigger("@daily", "Not/AZone"),
    ],
)
def test_unsupported(encoded: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedFeature):
        parse_timetable(encoded, dag_id="d")


def test_fixed_offset_timezone() -> None:
    runs = list(plan(cron_trigger("0 0 * * *", 3600)).runs())
    assert [r.info.run_after for r in runs] == [d(2025, 1, 1, 23), d(2025, 1, 2, 23)]


def test_asset_or_time_and_summary() -> None:
    enc = {
        "__type": "airflow.timetables.assets.AssetOrTimeSchedule",
        "__var": {"asset_condition": {}, "timetable": cron_trigger("@hourly")},
    }
    tt = parse_timetable(enc, dag_id="d")
    assert tt.summary == "Asset or 0 * * * *"
    assert parse_timetable(delta_trigger(86400.0), dag_id="d").summary == "1 day, 0:00:00"


def test_monthly_relativedelta_reverse_matches_forward() -> None:
    tt = parse_timetable(
        {
            "__type": "airflow.timetables.interval.DeltaDataIntervalTimetable",
            "__var": {"delta": {"months": 1}},
        },
        dag_id="d",
    )
    fwd = list(tt.iter_infos(d(2020, 1, 31), d(2024, 12, 31)))
    assert fwd[1].logical_date == d(2020, 2, 29) and fwd[2].logical_date == d(2020, 3, 29)
    assert list(tt.iter_infos_reverse(d(2020, 1, 31), d(2024, 12, 31))) == fwd[::-1]


def test_reverse_cron_long_range_is_lazy() -> None:
    tt = parse_timetable(cron_trigger("* * * * *"), dag_id="d")
    it = tt.iter_infos_reverse(d(2000, 1, 1), d(2025, 1, 1))  # ~13 million minutes
    assert next(it).run_after == d(2025, 1, 1)
    assert next(it).run_after == d(2024, 12, 31, 23, 59)


def test_validate_range() -> None:
    with pytest.raises(InvalidDateRange) as exc:
        validate_range(d(2025, 1, 2), d(2025, 1, 1), NOW)
    assert exc.value.field == "from_date"
    assert (
        str(exc.value)
        == "from_date (2025-01-02T00:00:00+00:00) must not be after to_date (2025-01-01T00:00:00+00:00)."
    )
    with pytest.raises(FutureDateRange):
        validate_range(d(2031, 1, 1), d(2032, 1, 1), NOW)
    validate_range(d(2029, 1, 1), d(2032, 1, 1), NOW)


def test_partitioned_timetable_plans_partitions_without_a_cutoff() -> None:
    """Keys in the zone, the bounds' wall clock read there, every partition kept (no cut-off)."""
    encoded = {
        "__type": "airflow.timetables.trigger.CronPartitionTimetable",
        "__var": {
            "expression": "0 0 * * *",
            "timezone": "Asia/Taipei",
            "run_offset": 1,
            "key_format": "%Y-%m-%d",
        },
    }
    tt = parse_timetable(encoded, dag_id="d")
    assert tt.partitioned and tt.summary == "0 0 * * *"
    runs = list(BackfillPlan(tt, d(2025, 1, 1), d(2025, 1, 3), True, d(2025, 1, 1)).runs())
    assert [r.info.partition_key for r in runs] == ["2025-01-03", "2025-01-02", "2025-01-01"]
    assert [r.info.partition_date for r in runs] == [
        d(2025, 1, 2, 16),
        d(2025, 1, 1, 16),
        d(2024, 12, 31, 16),
    ]
    assert all(r.info.run_after == r.info.partition_date for r in runs)
    assert runs[0].run_id.startswith("backfill__2025-01-02T16:00:00+00:00__2025-01-03__")
    assert runs[0].run_id != run_id_for(runs[0].info)  # a random suffix per call, as in Airflow
