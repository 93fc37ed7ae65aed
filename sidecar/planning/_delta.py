"""Delta timetables: DeltaTriggerTimetable and DeltaDataIntervalTimetable.

Both start exactly at the lower bound (Airflow does not align deltas) and step by the
delta. With a timedelta the k-th run is ``earliest + k * delta``, so the reverse walk
is computed directly. A calendar relativedelta (months, years, absolute fields) is
path dependent (Jan 31 -> Feb 28 -> Mar 28), so the reverse walk keeps a sparse list
of checkpoints from one forward pass and replays one segment at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sidecar.planning._model import DagRunInfo, RawInfo, as_utc
from sidecar.planning._stepped import SteppedTimetable
from sidecar.planning._tz import Interval, add, describe, is_calendar, sub

_CHECKPOINT_EVERY = 1024


class _DeltaTimetable(SteppedTimetable):
    """Shared reverse walking for the two delta timetables."""

    delta: Interval

    @property
    def summary(self) -> str:
        """``str(delta)``, e.g. ``1 day, 0:00:00``."""
        return describe(self.delta)

    def _at(self, earliest: dt.datetime, index: int) -> RawInfo:
        """The ``index``-th run of a linear (timedelta) sequence."""
        raise NotImplementedError

    def _reverse(
        self, earliest: dt.datetime, latest: dt.datetime, before: DagRunInfo | None
    ) -> Iterator[RawInfo]:
        first = next(self._forward(earliest, latest, None), None)
        if first is None:
            return
        upper = as_utc(latest)
        inclusive = True
        if before is not None:
            bkey = as_utc(self._key(RawInfo.from_public(before)))
            if bkey <= upper:
                upper, inclusive = bkey, False
        if is_calendar(self.delta):
            yield from self._reverse_checkpointed(earliest, latest, upper, inclusive)
            return
        assert isinstance(self.delta, dt.timedelta)
        step = self.delta
        base = as_utc(self._key(first))
        if upper < base:
            return
        count, rest = divmod(upper - base, step)
        if not inclusive and rest == dt.timedelta(0):
            count -= 1
        for index in range(count, 0, -1):
            yield self._at(earliest, index)
        if self._below(base, upper, inclusive):
            yield first

    def _reverse_checkpointed(
        self, earliest: dt.datetime, latest: dt.datetime, upper: dt.datetime, inclusive: bool
    ) -> Iterator[RawInfo]:
        checkpoints: list[RawInfo] = []
        for index, info in enumerate(self._forward(earliest, latest, None)):
            if not self._below(as_utc(self._key(info)), upper, inclusive):
                break
            if index % _CHECKPOINT_EVERY == 0:
                checkpoints.append(info)
        for checkpoint in reversed(checkpoints):
            segment = [checkpoint]
            for info in self._forward(earliest, latest, checkpoint):
                if len(segment) >= _CHECKPOINT_EVERY or not self._below(
                    as_utc(self._key(info)), upper, inclusive
                ):
                    break
                segment.append(info)
            yield from reversed(segment)


class DeltaTriggerTimetable(_DeltaTimetable):
    """Runs every ``delta`` from the lower bound; data interval ``[tick - interval, tick]``."""

    def __init__(self, delta: Interval, interval: Interval) -> None:
        self.delta = delta
        self.interval = interval

    def _info(self, tick: dt.datetime) -> RawInfo:
        return RawInfo(sub(tick, self.interval), tick, tick)

    def _at(self, earliest: dt.datetime, index: int) -> RawInfo:
        assert isinstance(self.delta, dt.timedelta)
        return self._info(as_utc(earliest) + self.delta * index)

    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        if latest is not None and latest < earliest:
            return None
        return self._info(earliest)

    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        tick = add(prev.end, self.delta)
        if latest is not None and latest < tick:
            return None
        return self._info(tick)


class DeltaDataIntervalTimetable(_DeltaTimetable):
    """Consecutive intervals of length ``delta`` starting at the lower bound; run at the end."""

    def __init__(self, delta: Interval) -> None:
        self.delta = delta

    def _key(self, info: RawInfo) -> dt.datetime:
        return info.start

    def _at(self, earliest: dt.datetime, index: int) -> RawInfo:
        assert isinstance(self.delta, dt.timedelta)
        start = as_utc(earliest) + self.delta * index
        end = start + self.delta
        return RawInfo(start, end, end)

    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        if latest is not None and earliest > latest:
            return None
        end = add(earliest, self.delta)
        return RawInfo(earliest, end, end)

    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        start = max(prev.end, earliest)
        if start <= prev.start:
            start = add(start, self.delta)
            if start <= prev.start:
                raise ValueError(f"DeltaDataIntervalTimetable did not advance past {prev.start}")
        if latest is not None and start > latest:
            return None
        end = add(start, self.delta)
        return RawInfo(start, end, end)
