"""Backfill plans: the ordered, filtered list of runs Airflow's ``_get_info_list`` returns.

A plan is lazy: runs are produced on demand in plan order and a consumer can resume
after any run it has already written, so a plan over millions of slots needs constant
memory.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from sidecar.errors import FutureDateRange, InvalidDateRange
from sidecar.planning._cron import CronDataIntervalTimetable, CronTriggerTimetable
from sidecar.planning._delta import DeltaDataIntervalTimetable, DeltaTriggerTimetable
from sidecar.planning._model import DagRunInfo, Timetable, as_utc, run_id_for
from sidecar.planning._tz import is_calendar


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One run of a plan.

    Attributes:
        sort_ordinal: 1-based position in plan order (Airflow's ``BackfillDagRun.sort_ordinal``).
        info: The run's dates.
        run_id: ``backfill__<run_after>`` (a partition's: see :func:`run_id_for`).
    """

    sort_ordinal: int
    info: DagRunInfo
    run_id: str


@dataclass(frozen=True, slots=True)
class Grid:
    """The runs of an evenly spaced plan, by index in date order: run ``i`` is ``first`` moved by ``i * step``.

    Attributes:
        first: The earliest run (as the timetable computed it, in the offset it keeps).
        step: The constant spacing of the runs on the UTC time line (positive).
        size: How many runs the plan has.
        reverse: The plan runs latest first (the index of ordinal 1 is ``size - 1``).
    """

    first: DagRunInfo
    step: dt.timedelta
    size: int
    reverse: bool

    def index_of(self, ordinal: int) -> int:
        """The date-order index of the run with ``ordinal`` (1-based, plan order)."""
        return self.size - ordinal if self.reverse else ordinal - 1

    def info(self, index: int) -> DagRunInfo:
        """The run at ``index`` (0-based, date order)."""
        return _shifted(self.first, self.step, index)

    def run(self, index: int) -> PlannedRun:
        """The planned run at ``index`` (0-based, date order), with its plan-order ordinal."""
        info = self.info(index)
        ordinal = self.size - index if self.reverse else index + 1
        return PlannedRun(ordinal, info, run_id_for(info))

    def position(self, identity: dt.datetime) -> int | None:
        """The index of the run whose identity (logical date) is ``identity``; None if no run has it.

        A run has it when ``identity - first`` is a whole number of steps inside the plan: the
        instants are compared, whatever offsets they are written in (as a dict of aware dates
        looks them up); a naive date is no run's.
        """
        if identity.tzinfo is None or identity.utcoffset() is None:
            return None
        index, rest = divmod(identity - self.first.identity, self.step)
        return index if not rest and 0 <= index < self.size else None


@dataclass(frozen=True)
class BackfillPlan:
    """The runs a backfill over ``[from_date, to_date]`` creates, in Airflow's order.

    Attributes:
        timetable: The DAG's timetable.
        from_date: Inclusive lower bound (aware).
        to_date: Inclusive upper bound (aware).
        reverse: Latest run first (ordinal 1 is the latest date).
        cutoff: "Now", frozen when the backfill is created; Airflow keeps only runs
            whose data interval ended strictly before it (not for a partitioned timetable:
            every partition of the range is kept).
    """

    timetable: Timetable
    from_date: dt.datetime
    to_date: dt.datetime
    reverse: bool
    cutoff: dt.datetime

    def _infos(self, resume: DagRunInfo | None) -> Iterator[DagRunInfo]:
        if self.reverse:
            return self.timetable.iter_infos_reverse(self.from_date, self.to_date, before=resume)
        return self.timetable.iter_infos(self.from_date, self.to_date, after=resume)

    def runs(self, *, after: PlannedRun | None = None) -> Iterator[PlannedRun]:
        """Yield the plan's runs lazily, resuming strictly after ``after`` if given.

        Evenly spaced schedules (:func:`uniform_step`) are computed by index, without
        stepping the timetable (cron matching costs most of a batch's CPU otherwise);
        everything else steps the timetable exactly as Airflow does.
        """
        grid = self._uniform
        if grid is not None:
            start = 0 if after is None else after.sort_ordinal
            if after is None or after.info == grid.info(grid.index_of(start)):
                for ordinal in range(start + 1, grid.size + 1):
                    yield grid.run(grid.index_of(ordinal))
                return
        cutoff = as_utc(self.cutoff)
        ordinal = 0 if after is None else after.sort_ordinal
        infos = self._infos(None if after is None else after.info)
        if self.timetable.partitioned:
            # Airflow keeps every partition of the range: no cut-off at now (_get_info_list).
            for info in infos:
                ordinal += 1
                yield PlannedRun(ordinal, info, run_id_for(info))
            return
        if not self.reverse:
            # Interval ends increase with the run, so the first one past the cutoff ends the plan.
            for info in infos:
                if info.data_interval_end >= cutoff:
                    return
                ordinal += 1
                yield PlannedRun(ordinal, info, run_id_for(info))
            return
        for info in infos:
            if info.data_interval_end >= cutoff:
                continue
            ordinal += 1
            yield PlannedRun(ordinal, info, run_id_for(info))

    @property
    def counts_fast(self) -> bool:
        """Whether :meth:`count` is arithmetic (constant time) rather than an enumeration."""
        return self._uniform is not None

    def count_at_most(self, limit: int) -> int:
        """``min(count(), limit + 1)``, enumerating at most ``limit + 1`` runs."""
        if self.counts_fast:
            return min(self.count(), limit + 1)
        return sum(1 for _ in itertools.islice(self.runs(), limit + 1))

    def count(self) -> int:
        """Number of runs in the plan: computed in O(1) where the schedule allows, else enumerated.

        Schedules whose runs are evenly spaced on the UTC time line (a timedelta delta,
        or an hourly/daily-shaped cron in a fixed-offset zone, see :func:`uniform_step`)
        are counted arithmetically from their first run, and the result is checked
        against the timetable's own step at the plan's end; anything else (and any
        failed check) falls back to lazy enumeration in constant memory.
        """
        grid = self._uniform
        if grid is not None:
            return grid.size
        return sum(1 for _ in self.runs())

    @property
    def grid(self) -> Grid | None:
        """The plan as an evenly spaced :class:`Grid` (see :meth:`count`); None when it must be stepped."""
        return self._uniform

    @cached_property
    def _uniform(self) -> Grid | None:
        """The grid of an evenly spaced plan whose arithmetic checked out."""
        step = uniform_step(self.timetable)
        if step is None:
            return None
        first = next(self.timetable.iter_infos(self.from_date, self.to_date), None)
        if first is None:
            return None
        total = self._computed_count(step, first)
        return None if total is None else Grid(first, step, total, self.reverse)

    def _computed_count(self, step: dt.timedelta, first: DagRunInfo) -> int | None:
        cutoff = as_utc(self.cutoff)
        key_offset = _bounded_key(self.timetable, first)
        # Runs i = 0..n-1 have every date shifted by i * step: bounded by the range's upper
        # end on their key, and by the cutoff on their data interval end.
        in_range = (as_utc(self.to_date) - key_offset) // step + 1 if key_offset <= self.to_date else 0
        before_cutoff = max(0, -((first.data_interval_end - cutoff) // step))
        total = max(0, min(in_range, before_cutoff))
        return total if self._step_agrees(first, step, total) else None

    def _step_agrees(self, first: DagRunInfo, step: dt.timedelta, total: int) -> bool:
        """Check the arithmetic against the timetable's own steps around the plan's last run."""
        cutoff = as_utc(self.cutoff)
        if total == 0:
            return first.data_interval_end >= cutoff or _bounded_key(self.timetable, first) > self.to_date
        last = _shifted(first, step, total - 1)
        if total >= 2:
            second = next(self.timetable.iter_infos(self.from_date, self.to_date, after=first), None)
            if second != _shifted(first, step, 1):
                return False
        if total >= 3:
            before_last = _shifted(first, step, total - 2)
            stepped = next(self.timetable.iter_infos(self.from_date, self.to_date, after=before_last), None)
            if stepped != last:
                return False
        if last.data_interval_end >= cutoff:
            return False
        following = next(self.timetable.iter_infos(self.from_date, self.to_date, after=last), None)
        return following is None or following.data_interval_end >= cutoff


def _shifted(info: DagRunInfo, step: dt.timedelta, times: int) -> DagRunInfo:
    if times == 0:  # the first run keeps the offsets Airflow computed it in
        return info
    shift = step * times  # later runs are stepped, and so in UTC as Airflow's steps are
    return DagRunInfo(
        as_utc(info.logical_date) + shift,
        as_utc(info.data_interval_start) + shift,
        as_utc(info.data_interval_end) + shift,
        as_utc(info.run_after) + shift,
    )


def _bounded_key(timetable: Timetable, info: DagRunInfo) -> dt.datetime:
    """The date of a run that the range's bounds apply to (the interval start or the trigger tick)."""
    if isinstance(timetable, DeltaDataIntervalTimetable | CronDataIntervalTimetable):
        return info.data_interval_start
    return info.run_after


def _cron_step(expression: str) -> dt.timedelta | None:
    """The constant step of an every-minute, hourly or daily cron expression, else None."""
    fields = expression.split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        return None
    minute, hour = fields[0], fields[1]
    if minute == "*" and hour == "*":
        return dt.timedelta(minutes=1)
    if not minute.isdigit():
        return None
    if hour == "*":
        return dt.timedelta(hours=1)
    if hour.isdigit():
        return dt.timedelta(days=1)
    return None


def uniform_step(timetable: Timetable) -> dt.timedelta | None:
    """The constant UTC spacing of ``timetable``'s runs, or None when it is not evenly spaced.

    Evenly spaced: delta timetables with a timedelta step (and interval), and cron
    timetables in a fixed-offset zone (no DST) whose expression fires every minute,
    every hour or once a day. Calendar steps (months), DST zones and other crons vary.
    """
    if isinstance(timetable, DeltaTriggerTimetable | DeltaDataIntervalTimetable):
        if is_calendar(timetable.delta):
            return None
        if isinstance(timetable, DeltaTriggerTimetable) and is_calendar(timetable.interval):
            return None
        step = timetable.delta
    elif isinstance(timetable, CronTriggerTimetable | CronDataIntervalTimetable):
        if not isinstance(timetable.cron.zone, dt.timezone):
            return None
        if isinstance(timetable, CronTriggerTimetable) and is_calendar(timetable.interval):
            return None
        step = _cron_step(timetable.cron.expression)
    else:
        return None
    if step is None or step <= dt.timedelta(0):
        return None
    return step


def validate_range(from_date: dt.datetime, to_date: dt.datetime, now: dt.datetime) -> None:
    """Apply Airflow's range checks, in Airflow's order.

    Raises:
        InvalidDateRange: ``from_date`` is after ``to_date``.
        FutureDateRange: both bounds are at or after ``now``.
    """
    if from_date > to_date:
        raise InvalidDateRange(
            f"from_date ({from_date.isoformat()}) must not be after to_date ({to_date.isoformat()}).",
            field="from_date",
        )
    if from_date >= now and to_date >= now:
        raise FutureDateRange("Backfill cannot be executed for future dates.", field="from_date")
