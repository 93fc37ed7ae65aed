"""CronPartitionTimetable: backfills over partitions, as Airflow 3.3 plans them.

Airflow 3.3's ``iter_partition_dagrun_infos`` (``airflow/timetables/trigger.py``) walks the
partition axis one cron tick at a time: the wall-clock readings of the range's bounds are
re-read in the timetable's zone (``localize_partition_datetime``), the lower one aligned up
to a tick, both inclusive. Each tick is a partition whose date, ``run_after`` and key are
the tick itself (``run_offset`` plays no part in a backfill), the key formatted with
``key_format`` in the timetable's zone. Partitioned runs have no logical date and no data
interval, and are not cut off at "now".

Beyond Airflow (apache/airflow#65922), a range may be given as partition keys: a key is
decoded with ``key_format`` in the zone (Airflow's ``_decode_partition_date``) and must name
exactly one partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sidecar.errors import InvalidArgument
from sidecar.planning._cron import CronTriggerTimetable
from sidecar.planning._model import UTC, DagRunInfo, Timetable
from sidecar.planning._tz import localize, wall_clock

#: Airflow's default ``key_format``.
DEFAULT_KEY_FORMAT = "%Y-%m-%dT%H:%M:%S"


class CronPartitionTimetable(Timetable):
    """One partition per cron tick in ``zone``, keyed by ``key_format`` in that zone."""

    partitioned = True

    def __init__(self, expression: str, zone: dt.tzinfo, key_format: str = DEFAULT_KEY_FORMAT) -> None:
        self.ticks = CronTriggerTimetable(expression, zone, dt.timedelta(0))
        self.zone = zone
        self.key_format = key_format

    @property
    def summary(self) -> str:
        """The cron expression (presets expanded), as Airflow shows it."""
        return self.ticks.summary

    def localize_bound(self, value: dt.datetime) -> dt.datetime:
        """Airflow's ``localize_partition_datetime``: ``value``'s wall clock read in the zone (UTC result)."""
        return localize(value.replace(tzinfo=None, fold=0), self.zone)

    def key_of(self, partition_date: dt.datetime) -> str:
        """The partition key of ``partition_date`` (Airflow's ``_format_key``)."""
        return partition_date.astimezone(self.zone).strftime(self.key_format)

    def _partition(self, info: DagRunInfo) -> DagRunInfo:
        tick = info.run_after
        return DagRunInfo(tick, tick, tick, tick, partition_key=self.key_of(tick), partition_date=tick)

    def iter_infos(
        self, earliest: dt.datetime, latest: dt.datetime, *, after: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """The partitions whose date lies in the localized ``[earliest, latest]``, oldest first."""
        low, high = self.localize_bound(earliest), self.localize_bound(latest)
        for info in self.ticks.iter_infos(low, high, after=after):
            yield self._partition(info)

    def iter_infos_reverse(
        self, earliest: dt.datetime, latest: dt.datetime, *, before: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """The same partitions, newest first."""
        low, high = self.localize_bound(earliest), self.localize_bound(latest)
        for info in self.ticks.iter_infos_reverse(low, high, before=before):
            yield self._partition(info)

    def bound_of_key(self, key: str, *, field: str) -> dt.datetime:
        """The range bound that makes the partition named ``key`` a first or last partition.

        The key is decoded as Airflow's ``_decode_partition_date`` does; the partition it names
        is the first at or after that instant, whose key must be ``key`` (a day key of a
        schedule that fires at 00:30 names the 00:30 partition). The bound is that partition's
        wall clock (as UTC, the form a request's dates take), which Airflow's backfill re-reads
        in the timetable's zone: stored as ``backfill.from_date`` or ``to_date``, it is what
        Airflow would have stored for the same range given as dates.

        Raises:
            InvalidArgument: ``key`` does not parse with ``key_format``, is not a partition of
                this schedule, or names several partitions (a key format coarser than the schedule).
        """
        try:
            naive = dt.datetime.strptime(key, self.key_format)
        except ValueError as exc:
            raise InvalidArgument(
                f"partition key {key!r} does not match the timetable's key_format {self.key_format!r}: {exc}",
                field=field,
            ) from None
        if naive.tzinfo is not None:  # a %z in the format: Airflow localizes the wall clock all the same
            naive = naive.replace(tzinfo=None)
        cron = self.ticks.cron
        try:
            instant = localize(naive, self.zone)
            tick = cron.align_to_next(instant)
            neighbours = (self.key_of(cron.get_next(tick)), self.key_of(cron.get_prev(tick)))
        except (ValueError, OverflowError, KeyError, TypeError, ArithmeticError):
            # croniter or datetime past year 1 or 9999: no partition there (and none Airflow could run)
            raise InvalidArgument(
                f"partition key {key!r} names no partition of schedule {self.summary!r}", field=field
            ) from None
        if self.key_of(tick) != key:
            raise InvalidArgument(
                f"partition key {key!r} names no partition of schedule {self.summary!r} "
                f"(the next partition is {self.key_of(tick)!r})",
                field=field,
            )
        if key in neighbours:
            raise InvalidArgument(
                f"partition key {key!r} names several partitions: key_format {self.key_format!r} "
                f"is coarser than schedule {self.summary!r}; give the range as dates",
                field=field,
            )
        return wall_clock(tick, self.zone).replace(tzinfo=UTC)
