"""Value types shared by the planner: run infos, the timetable interface and run ids.

The shapes mirror what Airflow 3.3.2 stores for a backfill so that the engine
can write rows without importing Airflow.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

UTC = dt.UTC


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken as UTC, like Airflow)."""
    if value.tzinfo is UTC:  # already (the planner's own steps): as it is, as astimezone would give it
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def with_offset(instant: dt.datetime, offset_seconds: int) -> dt.datetime:
    """``instant`` as the caller wrote it: the same instant in a fixed UTC offset.

    Airflow computes with the caller's datetime as given (``timezone.coerce_datetime``
    keeps its offset), and a run that falls exactly on a range bound keeps that offset
    in its run id (``backfill__2024-01-01T00:00:00+05:30``). The API carries the instant
    and the offset separately; this puts them back together (0: UTC, as a naive bound).
    """
    zone = UTC if offset_seconds == 0 else dt.timezone(dt.timedelta(seconds=offset_seconds))
    return as_utc(instant).astimezone(zone)


def utc_offset_seconds(value: dt.datetime) -> int:
    """The UTC offset ``value`` was written in, in seconds (0 for naive or UTC values)."""
    offset = value.utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def as_fixed(value: dt.datetime) -> dt.datetime:
    """Pin ``value`` to a fixed UTC offset, as ``pendulum.instance`` does for foreign tzinfos.

    Airflow coerces request datetimes to pendulum; arithmetic on them (relativedelta
    steps) then happens in that fixed offset, so we keep the offset rather than UTC.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value.tzinfo, dt.timezone):
        return value
    offset = value.utcoffset()
    assert offset is not None
    return value.astimezone(dt.timezone(offset))


@dataclass(frozen=True, slots=True)
class DagRunInfo:
    """One run a timetable schedules, in the form the backfill rows need.

    Every date is aware, in UTC except where Airflow keeps the caller's own offset: a
    date that *is* the range's lower bound (a trigger tick or an interval start falling
    exactly on it) stays in the offset the bound was given in, as in Airflow, whose run
    id then shows it. Dates compare and hash by instant, so this only shows in the run
    id and in the calendar arithmetic that steps from such a date.

    Attributes:
        logical_date: The run's logical date (the data interval start).
        data_interval_start: Start of the data interval.
        data_interval_end: End of the data interval.
        run_after: Earliest time the run may start; it also names the run id.
        partition_key: The partition's key (partitioned timetables), else None.
        partition_date: The partition's date, aware UTC (partitioned timetables), else None.

    A partitioned run has no logical date nor data interval in Airflow's rows (they are
    NULL); its three date fields then hold its partition date, the axis its plan is
    ordered and resumed on, and :attr:`partitioned` tells the rows to write NULL.
    """

    logical_date: dt.datetime
    data_interval_start: dt.datetime
    data_interval_end: dt.datetime
    run_after: dt.datetime
    partition_key: str | None = None
    partition_date: dt.datetime | None = None

    @property
    def partitioned(self) -> bool:
        """Whether this is a partition's run (``partition_key`` set)."""
        return self.partition_key is not None

    @property
    def identity(self) -> dt.datetime:
        """The date Airflow finds an existing run of this slot by: partition date, else logical date."""
        return self.partition_date if self.partition_date is not None else self.logical_date


class RawInfo(NamedTuple):
    """Internal run info that keeps the tzinfo Airflow would compute with.

    Airflow's first run may carry the request's own offset (e.g. when the lower bound
    is returned unaligned) and later relativedelta steps are taken in that offset, so
    the raw values are kept until the info is published.
    """

    start: dt.datetime
    end: dt.datetime
    run_after: dt.datetime

    def public(self) -> DagRunInfo:
        """Convert to the published :class:`DagRunInfo` (each date keeps its offset)."""
        return DagRunInfo(
            logical_date=self.start,
            data_interval_start=self.start,
            data_interval_end=self.end,
            run_after=self.run_after,
        )

    @staticmethod
    def from_public(info: DagRunInfo) -> RawInfo:
        """Rebuild a raw info from a published one (used to resume an iteration)."""
        return RawInfo(info.data_interval_start, info.data_interval_end, info.run_after)


_RUN_ID_SUFFIX_CHARS = string.ascii_letters + string.digits


def run_id_for(info: DagRunInfo) -> str:
    """Return the run id Airflow gives a new backfill run: ``backfill__`` + run_after.

    Airflow derives it from ``run_after`` (not the logical date) as it computed it: in UTC,
    except a tick on the range's lower bound, which keeps the caller's offset. Interval
    timetables get the interval *end* in their run id. A partition's run id is
    ``CronPartitionTimetable.generate_run_id``'s: ``backfill__<run_after in UTC>__<key>__<8
    random letters or digits>`` (``get_random_string``), so every call gives a new one, as in
    Airflow.
    """
    if info.partition_key:
        suffix = "".join(secrets.choice(_RUN_ID_SUFFIX_CHARS) for _ in range(8))
        return f"backfill__{as_utc(info.run_after).isoformat()}__{info.partition_key}__{suffix}"
    return "backfill__" + info.run_after.isoformat()


class Timetable(ABC):
    """A backfill-capable schedule rebuilt from Airflow's serialized timetable.

    Attributes:
        periodic: Always True for parsed timetables (non-periodic ones are refused).
    """

    periodic: bool = True
    partitioned: bool = False
    """Airflow's ``Timetable.partitioned``: runs are partitions (no logical date, no cut-off at now)."""

    @property
    @abstractmethod
    def summary(self) -> str:
        """Human readable schedule, as Airflow's ``Timetable.summary``."""

    @abstractmethod
    def iter_infos(
        self, earliest: dt.datetime, latest: dt.datetime, *, after: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """Yield lazily what ``SerializedDAG.iter_dagrun_infos_between(earliest, latest)`` yields.

        Args:
            earliest: Inclusive lower bound (aware).
            latest: Inclusive upper bound (aware).
            after: If given, resume strictly after this info, as Airflow's
                ``next_dagrun_info_v2(last_dagrun_info=after, ...)`` would.
        """

    @abstractmethod
    def iter_infos_reverse(
        self, earliest: dt.datetime, latest: dt.datetime, *, before: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """Yield the same infos as :meth:`iter_infos`, latest first, without a forward pass.

        Args:
            earliest: Inclusive lower bound (aware).
            latest: Inclusive upper bound (aware).
            before: If given, resume strictly before this info.
        """
