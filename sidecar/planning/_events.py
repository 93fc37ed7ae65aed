"""EventsTimetable: runs at a fixed, listed set of instants.

Each run is exact (``data interval = [event, event]``, ``run_after = event``), so the
forward and reverse walks are bisections of the sorted event list.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterator

from sidecar.planning._model import DagRunInfo, RawInfo, as_fixed, as_utc
from sidecar.planning._stepped import SteppedTimetable


class EventsTimetable(SteppedTimetable):
    """Runs at each listed event date within the range."""

    def __init__(self, events: list[dt.datetime], summary: str) -> None:
        # Each event keeps the offset it was serialized with: Airflow's run id shows it
        # (``backfill__2024-03-01T09:00:00+01:00``). Aware datetimes sort by instant.
        self.events = sorted(as_fixed(e) for e in events)
        self._summary = summary

    @property
    def summary(self) -> str:
        """Airflow's summary: the description or ``"<n> events"``."""
        return self._summary

    def _exact(self, index: int, latest: dt.datetime | None) -> RawInfo | None:
        if index >= len(self.events):
            return None
        event = self.events[index]
        if latest is not None and event > latest:
            return None
        return RawInfo(event, event, event)

    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        return self._exact(bisect.bisect_left(self.events, as_utc(earliest)), latest)

    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        index = max(
            bisect.bisect_left(self.events, as_utc(earliest)), bisect.bisect_right(self.events, prev.end)
        )
        return self._exact(index, latest)

    def _reverse(
        self, earliest: dt.datetime, latest: dt.datetime, before: DagRunInfo | None
    ) -> Iterator[RawInfo]:
        low = bisect.bisect_left(self.events, as_utc(earliest))
        high = bisect.bisect_right(self.events, as_utc(latest))
        if before is not None:
            high = min(high, bisect.bisect_left(self.events, as_utc(before.run_after)))
        for index in range(high - 1, low - 1, -1):
            event = self.events[index]
            yield RawInfo(event, event, event)
