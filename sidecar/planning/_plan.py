"""Backfill plans: the ordered, filtered list of runs Airflow's ``_get_info_list`` returns.

A plan is lazy: runs are produced on demand in plan order and a consumer can resume
after any run it has already written, so a plan over millions of slots needs constant
memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sidecar.errors import FutureDateRange, InvalidDateRange
from sidecar.planning._model import DagRunInfo, Timetable, as_utc, run_id_for


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One run of a plan.

    Attributes:
        sort_ordinal: 1-based position in plan order (Airflow's ``BackfillDagRun.sort_ordinal``).
        info: The run's dates.
        run_id: ``backfill__<run_after in UTC>``.
    """

    sort_ordinal: int
    info: DagRunInfo
    run_id: str


@dataclass(frozen=True)
class BackfillPlan:
    """The runs a backfill over ``[from_date, to_date]`` creates, in Airflow's order.

    Attributes:
        timetable: The DAG's timetable.
        from_date: Inclusive lower bound (aware).
        to_date: Inclusive upper bound (aware).
        reverse: Latest run first (ordinal 1 is the latest date).
        cutoff: "Now", frozen when the backfill is created; Airflow keeps only runs
            whose data interval ended strictly before it.
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
        """Yield the plan's runs lazily, resuming strictly after ``after`` if given."""
        cutoff = as_utc(self.cutoff)
        ordinal = 0 if after is None else after.sort_ordinal
        infos = self._infos(None if after is None else after.info)
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

    def count(self) -> int:
        """Number of runs in the plan (enumerates lazily, in constant memory)."""
        return sum(1 for _ in self.runs())


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
