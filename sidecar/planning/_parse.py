"""Rebuild a timetable from ``serialized_dag.data["dag"]["timetable"]`` (Airflow 3.3.2).

The stored form is ``{"__type": "<class path>", "__var": {...}}``. Built-in periodic
timetables are reproduced; Airflow's non-periodic ones are refused the way Airflow
refuses them, and anything else (plugin timetables) is refused as unsupported because
only Airflow could evaluate it. ``CronPartitionTimetable`` is planned as Airflow 3.3 plans
it (:mod:`sidecar.planning._partition`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from sidecar.errors import NonPeriodicSchedule, UnsupportedFeature
from sidecar.planning._cron import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    MultipleCronTriggerTimetable,
)
from sidecar.planning._delta import DeltaDataIntervalTimetable, DeltaTriggerTimetable
from sidecar.planning._events import EventsTimetable
from sidecar.planning._model import DagRunInfo, Timetable
from sidecar.planning._partition import CronPartitionTimetable
from sidecar.planning._tz import decode_interval, is_positive, parse_timezone

_PREFIX = "airflow.timetables."

#: Timetables with ``periodic = False`` in Airflow (backfill refuses them).
NON_PERIODIC_TYPES: frozenset[str] = frozenset(
    _PREFIX + name
    for name in (
        "simple.NullTimetable",
        "simple.OnceTimetable",
        "simple.ContinuousTimetable",
        "simple.AssetTriggeredTimetable",
        "simple.PartitionedAtRuntime",
        "simple.PartitionedAssetTimetable",
    )
)


def non_periodic_message(dag_id: str) -> str:
    """Airflow's message for a DAG whose schedule cannot be backfilled."""
    return f"{dag_id} has a non-periodic schedule that does not support backfills"


def parse_timetable(encoded: Mapping[str, Any], *, dag_id: str) -> Timetable:
    """Decode a serialized Airflow timetable into a :class:`Timetable`.

    Args:
        encoded: The ``{"__type", "__var"}`` dict from the serialized DAG.
        dag_id: Used in the non-periodic error message, as Airflow words it.

    Raises:
        NonPeriodicSchedule: Airflow's non-periodic timetables (None, @once, @continuous,
            asset triggered, partitioned-at-runtime...).
        UnsupportedFeature: A timetable this module cannot reproduce exactly (plugin
            timetables, an AssetOrTimeSchedule over a partitioned timetable) or a malformed value.
    """
    if not isinstance(encoded, Mapping) or not isinstance(encoded.get("__type"), str):
        raise UnsupportedFeature(f"timetable of DAG {dag_id} is not in Airflow's serialized form")
    type_path: str = encoded["__type"]
    data = encoded.get("__var") or {}
    if not isinstance(data, Mapping):
        raise UnsupportedFeature(f"timetable {type_path} has malformed serialized data")
    if type_path in NON_PERIODIC_TYPES:
        raise NonPeriodicSchedule(non_periodic_message(dag_id))
    try:
        timetable = _build(type_path, data, dag_id)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedFeature(f"timetable {type_path} has malformed serialized data: {exc!r}") from exc
    return timetable


def _build(type_path: str, data: Mapping[str, Any], dag_id: str) -> Timetable:
    name = type_path.removeprefix(_PREFIX) if type_path.startswith(_PREFIX) else None
    if name == "trigger.CronTriggerTimetable":
        return CronTriggerTimetable(
            _expression(data["expression"]),
            parse_timezone(data["timezone"]),
            decode_interval(data.get("interval", 0.0), what="CronTriggerTimetable interval"),
        )
    if name == "trigger.MultipleCronTriggerTimetable":
        expressions = data["expressions"]
        if not isinstance(expressions, list) or not expressions:
            raise UnsupportedFeature("MultipleCronTriggerTimetable needs at least one expression")
        return MultipleCronTriggerTimetable(
            [_expression(e) for e in expressions],
            parse_timezone(data["timezone"]),
            decode_interval(data.get("interval", 0.0), what="MultipleCronTriggerTimetable interval"),
        )
    if name == "interval.CronDataIntervalTimetable":
        return CronDataIntervalTimetable(_expression(data["expression"]), parse_timezone(data["timezone"]))
    if name == "trigger.DeltaTriggerTimetable":
        delta = _positive(decode_interval(data["delta"], what="DeltaTriggerTimetable delta"), type_path)
        interval = decode_interval(data.get("interval", 0.0), what="DeltaTriggerTimetable interval")
        return DeltaTriggerTimetable(delta, interval)
    if name == "interval.DeltaDataIntervalTimetable":
        delta = _positive(decode_interval(data["delta"], what="DeltaDataIntervalTimetable delta"), type_path)
        return DeltaDataIntervalTimetable(delta)
    if name == "events.EventsTimetable":
        return _events(data)
    if name == "assets.AssetOrTimeSchedule":
        inner = data.get("timetable")
        if not isinstance(inner, Mapping):
            raise UnsupportedFeature("AssetOrTimeSchedule without an inner timetable")
        timetable = parse_timetable(inner, dag_id=dag_id)
        if timetable.partitioned:
            raise UnsupportedFeature(
                "AssetOrTimeSchedule over a partitioned timetable (CronPartitionTimetable) is not supported"
            )
        return _AssetOrTime(timetable)
    if name == "trigger.CronPartitionTimetable":
        key_format = data["key_format"]
        if not isinstance(key_format, str):
            raise UnsupportedFeature(f"CronPartitionTimetable key_format {key_format!r} is not a string")
        return CronPartitionTimetable(
            _expression(data["expression"]), parse_timezone(data["timezone"]), key_format
        )
    raise UnsupportedFeature(f"timetable {type_path} (custom or unknown) is not supported")


def _expression(value: object) -> str:
    if not isinstance(value, str):
        raise UnsupportedFeature(f"cron expression {value!r} is not a string")
    return value


def _positive(delta: Any, type_path: str) -> Any:
    # Airflow's DAG validation rejects these; stepping by them would never end.
    if not is_positive(delta):
        raise UnsupportedFeature(f"{type_path} with a non-positive delta {delta!r} is not supported")
    return delta


def _events(data: Mapping[str, Any]) -> EventsTimetable:
    events = [dt.datetime.fromisoformat(x) for x in data["event_dates"]]
    if any(e.tzinfo is None or e.utcoffset() is None for e in events):
        raise UnsupportedFeature("EventsTimetable with naive event dates is not supported")
    summary = data.get("_summary")
    if not isinstance(summary, str):
        description = data.get("description")
        summary = description if isinstance(description, str) else f"{len(events)} events"
    return EventsTimetable(events, summary)


class _AssetOrTime(Timetable):
    """AssetOrTimeSchedule: backfills follow the inner time-based timetable."""

    def __init__(self, inner: Timetable) -> None:
        self.inner = inner

    @property
    def summary(self) -> str:
        """Airflow's ``"Asset or <inner summary>"``."""
        return f"Asset or {self.inner.summary}"

    def iter_infos(
        self, earliest: dt.datetime, latest: dt.datetime, *, after: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """Delegate to the inner timetable."""
        return self.inner.iter_infos(earliest, latest, after=after)

    def iter_infos_reverse(
        self, earliest: dt.datetime, latest: dt.datetime, *, before: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """Delegate to the inner timetable."""
        return self.inner.iter_infos_reverse(earliest, latest, before=before)
