"""Cron timetables: CronTriggerTimetable, CronDataIntervalTimetable, MultipleCronTriggerTimetable.

croniter (the library Airflow uses) finds the next/previous wall-clock match; the
time-zone handling around it follows Airflow's ``CronMixin``: for schedules that
fire at least hourly the wall-clock distance is added on the absolute time line, so
the repeated hour after a DST fall-back is also scheduled ("fold hour" fix); other
schedules localise the wall-clock match (second occurrence on folds, pushed past
gaps).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from croniter import croniter

from sidecar.planning._model import UTC, RawInfo
from sidecar.planning._stepped import SteppedTimetable
from sidecar.planning._tz import Interval, localize, sub, wall_clock

#: Airflow's ``airflow.utils.dates.cron_presets``; other ``@`` aliases reach croniter as is.
CRON_PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


class CronSchedule:
    """One cron expression in one zone, with Airflow's next/prev/align rules."""

    __slots__ = ("_every_hour", "expression", "zone")

    def __init__(self, expression: str, zone: dt.tzinfo) -> None:
        self.expression = CRON_PRESETS.get(expression, expression)
        self.zone = zone
        self._every_hour: bool | None = None

    def _covers_every_hour(self, cron: Any) -> bool:
        if self._every_hour is None:
            self._every_hour = bool(cron.expanded[1] == ["*"])
        return self._every_hour

    def get_next(self, current: dt.datetime) -> dt.datetime:
        """First match strictly after ``current`` (aware UTC)."""
        naive = wall_clock(current, self.zone)
        cron = croniter(self.expression, start_time=naive)
        scheduled: dt.datetime = cron.get_next(dt.datetime)
        if not self._covers_every_hour(cron):
            return localize(scheduled, self.zone)
        return current.astimezone(UTC) + (scheduled - naive)

    def get_prev(self, current: dt.datetime) -> dt.datetime:
        """Last match strictly before ``current`` (aware UTC)."""
        naive = wall_clock(current, self.zone)
        cron = croniter(self.expression, start_time=naive)
        scheduled: dt.datetime = cron.get_prev(dt.datetime)
        if not self._covers_every_hour(cron):
            return localize(scheduled, self.zone)
        return current.astimezone(UTC) - (naive - scheduled)

    def align_to_next(self, current: dt.datetime) -> dt.datetime:
        """``current`` if it is a match, else the next match (Airflow's ``_align_to_next``)."""
        following = self.get_next(current)
        if self.get_prev(following) != current:
            return following
        return current

    def align_to_prev(self, current: dt.datetime) -> dt.datetime:
        """``current`` if it is a match, else the previous match (Airflow's ``_align_to_prev``)."""
        previous = self.get_prev(current)
        if self.get_next(previous) != current:
            return previous
        return current


class CronTriggerTimetable(SteppedTimetable):
    """Runs at each cron tick; the data interval is ``[tick - interval, tick]``.

    ``run_immediately`` only chooses the first *scheduled* run when no start date is
    known, so it never affects a backfill (which always has a lower bound).
    """

    def __init__(self, expression: str, zone: dt.tzinfo, interval: Interval) -> None:
        self.cron = CronSchedule(expression, zone)
        self.interval = interval

    @property
    def summary(self) -> str:
        """The cron expression (presets expanded), as Airflow shows it."""
        return self.cron.expression

    def _info(self, tick: dt.datetime) -> RawInfo:
        return RawInfo(sub(tick, self.interval), tick, tick)

    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        tick = self.cron.align_to_next(earliest)
        if latest is not None and latest < tick:
            return None
        return self._info(tick)

    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        tick = self.cron.get_next(prev.end)
        if latest is not None and latest < tick:
            return None
        return self._info(tick)


class MultipleCronTriggerTimetable(SteppedTimetable):
    """Several cron triggers sharing zone and interval; at most one run per instant.

    Like Airflow, each expression proposes its next run and the one with the earliest
    logical date wins, the first expression winning ties.
    """

    def __init__(self, expressions: list[str], zone: dt.tzinfo, interval: Interval) -> None:
        self.triggers = [CronTriggerTimetable(e, zone, interval) for e in expressions]

    @property
    def summary(self) -> str:
        """The expressions joined by ", "."""
        return ", ".join(t.summary for t in self.triggers)

    @staticmethod
    def _pick(candidates: list[RawInfo | None]) -> RawInfo | None:
        best: RawInfo | None = None
        for info in candidates:
            if info is not None and (best is None or info.start.timestamp() < best.start.timestamp()):
                best = info
        return best

    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        return self._pick([t._first(earliest, latest) for t in self.triggers])

    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        return self._pick([t._next(prev, earliest, latest) for t in self.triggers])


class CronDataIntervalTimetable(SteppedTimetable):
    """Each data interval runs from one cron tick to the next; the run starts at its end.

    The range bounds apply to the interval start (the logical date), the lower bound
    aligned up to a tick.
    """

    def __init__(self, expression: str, zone: dt.tzinfo) -> None:
        self.cron = CronSchedule(expression, zone)
        self._aligned: tuple[dt.datetime, dt.datetime] | None = None

    @property
    def summary(self) -> str:
        """The cron expression (presets expanded)."""
        return self.cron.expression

    def _key(self, info: RawInfo) -> dt.datetime:
        return info.start

    def _align_earliest(self, earliest: dt.datetime) -> dt.datetime:
        cached = self._aligned
        if cached is not None and cached[0] == earliest and cached[0].tzinfo is earliest.tzinfo:
            return cached[1]
        aligned = self.cron.align_to_next(earliest)
        self._aligned = (earliest, aligned)
        return aligned

    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        start = self._align_earliest(earliest)
        if latest is not None and start > latest:
            return None
        end = self.cron.get_next(start)
        return RawInfo(start, end, end)

    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        start = max(self.cron.align_to_prev(prev.end), self._align_earliest(earliest))
        if start <= prev.start:
            start = self.cron.get_next(start)
            if start <= prev.start:
                raise ValueError(f"CronDataIntervalTimetable did not advance past {prev.start}")
        if latest is not None and start > latest:
            return None
        end = self.cron.get_next(start)
        return RawInfo(start, end, end)
