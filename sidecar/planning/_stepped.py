"""Forward stepping shared by all timetables, and a chunked backward walk.

Airflow enumerates backfill runs by calling ``next_dagrun_info_v2`` repeatedly, each
step depending only on the previous run. Subclasses provide that first/next step;
this module turns it into lazy forward iteration and into a reverse iteration that
walks back in bounded chunks (re-seeding the forward step shortly before each chunk
and checking the seeded sequence joins the already emitted one), so a range of
millions of slots is never held in memory nor enumerated from its start.
"""

from __future__ import annotations

import datetime as dt
from abc import abstractmethod
from collections.abc import Iterator

from sidecar.planning._model import DagRunInfo, RawInfo, Timetable, as_fixed, as_utc

_MIN_CHUNK = 256
_MAX_CHUNK = 4096
_SEED_ATTEMPTS = 6


class SteppedTimetable(Timetable):
    """A timetable defined by Airflow's first-run and next-run rules."""

    @abstractmethod
    def _first(self, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        """Return the first run at or after ``earliest`` (None past ``latest``)."""

    @abstractmethod
    def _next(self, prev: RawInfo, earliest: dt.datetime, latest: dt.datetime | None) -> RawInfo | None:
        """Return the run after ``prev`` (None past ``latest``)."""

    def _key(self, info: RawInfo) -> dt.datetime:
        """The value the range bounds apply to (the trigger tick by default)."""
        return info.run_after

    def _forward(
        self, earliest: dt.datetime, latest: dt.datetime | None, after: RawInfo | None
    ) -> Iterator[RawInfo]:
        # Airflow logs and stops on any exception raised while stepping (e.g. croniter
        # finding no further match); we end the sequence the same way.
        try:
            info = self._first(earliest, latest) if after is None else self._next(after, earliest, latest)
            while info is not None:
                yield info
                info = self._next(info, earliest, latest)
        except (ValueError, OverflowError, KeyError, TypeError, ArithmeticError):
            return

    def iter_infos(
        self, earliest: dt.datetime, latest: dt.datetime, *, after: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """See :meth:`Timetable.iter_infos`."""
        prev = None if after is None else RawInfo.from_public(after)
        for raw in self._forward(as_fixed(earliest), as_fixed(latest), prev):
            yield raw.public()

    def iter_infos_reverse(
        self, earliest: dt.datetime, latest: dt.datetime, *, before: DagRunInfo | None = None
    ) -> Iterator[DagRunInfo]:
        """See :meth:`Timetable.iter_infos_reverse`."""
        for raw in self._reverse(as_fixed(earliest), as_fixed(latest), before):
            yield raw.public()

    def _reverse(
        self, earliest: dt.datetime, latest: dt.datetime, before: DagRunInfo | None
    ) -> Iterator[RawInfo]:
        first = next(self._forward(earliest, latest, None), None)
        if first is None:
            return
        start_key = as_utc(self._key(first))
        # Upper bound of the part not yet emitted: (value, inclusive).
        upper = as_utc(latest)
        inclusive = True
        anchor: RawInfo | None = None
        if before is not None:
            anchor = RawInfo.from_public(before)
            bkey = as_utc(self._key(anchor))
            if bkey <= upper:
                upper, inclusive = bkey, False
            else:
                anchor = None
        span = dt.timedelta(hours=1)
        while True:
            if upper - start_key <= span * 2:
                chunk = self._exact_chunk(earliest, latest, None, upper, inclusive)
                yield from reversed(chunk)
                return
            lo = upper - span
            chunk = self._seeded_chunk(earliest, latest, start_key, lo, upper, inclusive, span, anchor)
            yield from reversed(chunk)
            if chunk:
                anchor = chunk[0]
                upper, inclusive = as_utc(self._key(chunk[0])), False
            else:
                upper, inclusive = lo, False
            if len(chunk) < _MIN_CHUNK:
                span *= 4
            elif len(chunk) > _MAX_CHUNK:
                span /= 2

    @staticmethod
    def _below(key: dt.datetime, upper: dt.datetime, inclusive: bool) -> bool:
        return key <= upper if inclusive else key < upper

    def _exact_chunk(
        self,
        earliest: dt.datetime,
        latest: dt.datetime,
        lo: dt.datetime | None,
        upper: dt.datetime,
        inclusive: bool,
    ) -> list[RawInfo]:
        """Enumerate from the true first run; only used near the start or as a fallback."""
        out: list[RawInfo] = []
        for info in self._forward(earliest, latest, None):
            key = as_utc(self._key(info))
            if not self._below(key, upper, inclusive):
                break
            if lo is None or key >= lo:
                out.append(info)
        return out

    def _seeded_run(
        self,
        seed: dt.datetime,
        latest: dt.datetime,
        lo: dt.datetime,
        upper: dt.datetime,
        inclusive: bool,
    ) -> tuple[list[RawInfo], RawInfo | None]:
        """Step forward from ``seed``; return runs in [lo, upper) and the first run past it."""
        out: list[RawInfo] = []
        for info in self._forward(seed, latest, None):
            key = as_utc(self._key(info))
            if not self._below(key, upper, inclusive):
                return out, info
            if key >= lo:
                out.append(info)
        return out, None

    def _seeded_chunk(
        self,
        earliest: dt.datetime,
        latest: dt.datetime,
        start_key: dt.datetime,
        lo: dt.datetime,
        upper: dt.datetime,
        inclusive: bool,
        span: dt.timedelta,
        anchor: RawInfo | None,
    ) -> list[RawInfo]:
        """Runs with key in [lo, upper), computed from a forward seed placed before ``lo``.

        The seeded sequence is accepted only if it reaches ``anchor`` (the run just above
        the chunk) exactly, or, for the topmost chunk, if a seed placed further back gives
        the same runs; otherwise the seed moves back, eventually to the true start.
        """
        warm = span
        for _ in range(_SEED_ATTEMPTS):
            seed = lo - warm
            if seed <= start_key:
                break
            chunk, past = self._seeded_run(seed, latest, lo, upper, inclusive)
            if anchor is not None:
                if past is not None and as_utc(self._key(past)) == as_utc(self._key(anchor)):
                    return chunk
            else:
                check, _ = self._seeded_run(lo - warm * 4, latest, lo, upper, inclusive)
                if check == chunk:
                    return chunk
            warm *= 4
        return self._exact_chunk(earliest, latest, lo, upper, inclusive)
