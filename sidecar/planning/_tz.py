"""Time zones, wall-clock conversion and Airflow's serialized intervals.

Airflow stores a timetable's zone as an IANA name or, for a fixed offset, as the
offset in seconds; intervals are float seconds (timedelta) or a dict of
relativedelta fields. Localisation follows Airflow's ``make_aware``: ambiguous wall
times take the *second* occurrence (fold=1) and nonexistent ones are pushed forward
by the size of the gap, as pendulum's ``Timezone.convert`` does.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Any

from dateutil.relativedelta import relativedelta, weekday

from sidecar.errors import UnsupportedFeature
from sidecar.planning._model import UTC

#: A step or a data interval: a fixed duration or a calendar relativedelta.
Interval = dt.timedelta | Any


def parse_timezone(value: object) -> dt.tzinfo:
    """Decode Airflow's ``encode_timezone`` output (IANA name or offset in seconds).

    Raises:
        UnsupportedFeature: The value is neither a known zone name nor an offset.
    """
    if isinstance(value, bool):
        raise UnsupportedFeature(f"timetable timezone {value!r} is not supported")
    if isinstance(value, int | float):
        return UTC if value == 0 else dt.timezone(dt.timedelta(seconds=value))
    if isinstance(value, str):
        if value.upper() == "UTC":
            return UTC
        try:
            return zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise UnsupportedFeature(f"timetable timezone {value!r} is not supported") from exc
    raise UnsupportedFeature(f"timetable timezone {value!r} is not supported")


def localize(naive: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """Attach ``zone`` to a wall time the way Airflow's ``make_aware`` does.

    Returns:
        An aware UTC datetime.
    """
    if isinstance(zone, dt.timezone):
        return naive.replace(tzinfo=zone).astimezone(UTC)
    before = zone.utcoffset(naive.replace(fold=0))
    after = zone.utcoffset(naive.replace(fold=1))
    assert before is not None and after is not None
    if after > before:  # nonexistent wall time: move past the gap
        naive = naive.replace(fold=0) + (after - before)
        return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return naive.replace(tzinfo=zone, fold=1).astimezone(UTC)


def wall_clock(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """Naive wall-clock reading of ``value`` in ``zone`` (Airflow's ``make_naive``)."""
    return value.astimezone(zone).replace(tzinfo=None, fold=0)


def decode_interval(value: object, *, what: str) -> Interval:
    """Decode Airflow's ``encode_interval`` output: float seconds or relativedelta fields.

    Raises:
        UnsupportedFeature: The value cannot be decoded.
    """
    if isinstance(value, bool):
        raise UnsupportedFeature(f"{what} {value!r} is not supported")
    if isinstance(value, int | float):
        return dt.timedelta(seconds=value)
    if isinstance(value, Mapping):
        fields: dict[str, Any] = dict(value)
        if "weekday" in fields:
            fields["weekday"] = weekday(*fields["weekday"])
        try:
            return relativedelta(**fields)
        except (TypeError, ValueError) as exc:
            raise UnsupportedFeature(f"{what} {dict(value)!r} is not supported") from exc
    raise UnsupportedFeature(f"{what} {value!r} is not supported")


def is_calendar(delta: Interval) -> bool:
    """Whether ``delta`` is a relativedelta (whose steps depend on the date)."""
    return not isinstance(delta, dt.timedelta)


def add(value: dt.datetime, delta: Interval) -> dt.datetime:
    """``convert_to_utc(value + delta)`` with pendulum semantics.

    A timedelta is added on the absolute time line; a relativedelta replaces the
    calendar fields in ``value``'s own (fixed) offset and then adds its duration part.
    The result is UTC, as Airflow's delta step converts it.
    """
    if isinstance(delta, dt.timedelta):
        return value.astimezone(UTC) + delta
    result: dt.datetime = value + delta
    return result.astimezone(UTC)


def sub(value: dt.datetime, delta: Interval) -> dt.datetime:
    """``value - delta`` with the same semantics as :func:`add`."""
    if isinstance(delta, dt.timedelta):
        return value.astimezone(UTC) - delta
    result: dt.datetime = value - delta
    return result


def describe(delta: Interval) -> str:
    """``str(delta)`` as Airflow's delta summary shows it."""
    return str(delta)


def is_positive(delta: Interval) -> bool:
    """Whether stepping by ``delta`` moves forward (Airflow's ``validate`` rule)."""
    probe = dt.datetime(2000, 1, 1, tzinfo=UTC)
    return add(probe, delta) > probe
