"""A cheap upper bound on a plan's size, so that most ranges are sized without stepping.

Stepping a cron in a zone with daylight saving costs about half a millisecond a slot: a
century of an hourly DAG would take minutes just to be checked against the limit on runs
per backfill. A cron expression fires at most ``|minutes| x |hours|`` times a day, and a
day has at most 25 hours, so twice that per calendar day in the range (plus its two ends)
is a safe bound that costs nothing to compute.
"""

from __future__ import annotations

import datetime as dt

from sidecar.planning._cron import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    MultipleCronTriggerTimetable,
)
from sidecar.planning._model import Timetable

__all__ = ["runs_upper_bound"]


def _field_size(field: str, low: int, high: int) -> int | None:
    """How many values a cron minute or hour field can take (None when it is not understood)."""
    total = 0
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        if step_text and not step_text.isdigit():
            return None
        step = int(step_text) if step_text else 1
        if step < 1:
            return None
        if base == "*":
            first, last = low, high
        elif "-" in base:
            start, _, end = base.partition("-")
            if not (start.isdigit() and end.isdigit()):
                return None
            first, last = int(start), int(end)
        elif base.isdigit():
            first = int(base)
            last = high if step_text else first
        else:
            return None
        total += len(range(first, max(first, last) + 1, step))
    return min(total, high - low + 1)


def _fires_per_day(expression: str) -> int | None:
    fields = expression.split()
    if len(fields) != 5:
        return None
    minutes = _field_size(fields[0], 0, 59)
    hours = _field_size(fields[1], 0, 23)
    if minutes is None or hours is None:
        return None
    return minutes * hours


def runs_upper_bound(timetable: Timetable, from_date: dt.datetime, to_date: dt.datetime) -> int | None:
    """At least as many runs as ``timetable`` has in ``[from_date, to_date]``; None: no cheap bound."""
    if isinstance(timetable, CronTriggerTimetable | CronDataIntervalTimetable):
        per_day = _fires_per_day(timetable.cron.expression)
    elif isinstance(timetable, MultipleCronTriggerTimetable):
        sizes = [_fires_per_day(t.cron.expression) for t in timetable.triggers]
        per_day = None if None in sizes else sum(s for s in sizes if s is not None)
    else:
        return None
    if per_day is None:
        return None
    days = (to_date - from_date).days + 3  # both partial ends, and a data interval before the start
    return 2 * per_day * days  # a 25-hour day fires at most twice as often as a 24-hour one
