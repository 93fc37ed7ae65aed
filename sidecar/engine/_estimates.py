"""Estimates: how long a backfill's unfinished runs should take, from finished runs' durations.

The model is the simplest one that a user can check by hand: a run takes about as long as
the DAG's runs took lately (the median, and the 90th percentile as a pessimistic bound), and
the backfill runs ``max_active_runs`` of them at a time, so the runs left take
``runs_left x duration / min(max_active_runs, runs_left)``. Before a backfill's own runs have
finished the durations come from the DAG's latest finished runs (``history``); once
:data:`OWN_RUNS_ENOUGH` of its own have finished, from those (``backfill``): the estimate
corrects itself as the backfill goes, for a DAG whose old runs were shorter or longer.

Reads are bounded (the latest ``EngineConfig.estimate_sample`` finished runs, along an index);
a DAG with no finished run has no estimate. A backfill's durations are read again only when
it has news for them (:class:`DurationsCache`): a Watch polls every second, and its estimate
must not cost a read of the durations each time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._config import Parts
from sidecar.engine._model import BackfillView, Estimate
from sidecar.store import backfill_run_durations, dag_run_durations
from sidecar.vocabulary import State

__all__ = [
    "DURATIONS_MAX_AGE",
    "OWN_RUNS_ENOUGH",
    "DurationsCache",
    "estimate",
    "percentile",
    "with_estimate",
]

#: The backfill's own finished runs from which its estimate stops using the DAG's history.
OWN_RUNS_ENOUGH = 5

#: How long a backfill's durations are used without one of its runs finishing: the DAG's other
#: runs (the ``history`` basis) finish without the backfill's counts showing it.
DURATIONS_MAX_AGE = dt.timedelta(seconds=60)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, interpolated linearly between order statistics."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def estimate(
    durations: Sequence[float], basis: str, runs_left: int | None, max_active_runs: int
) -> Estimate | None:
    """The estimate for ``runs_left`` runs from ``durations`` (seconds); None without durations.

    ``runs_left`` None (the plan is still being counted): the durations of one run only, no
    time left, rather than a time computed from a partial count.
    """
    if not durations:
        return None
    p50, p90 = percentile(durations, 0.5), percentile(durations, 0.9)
    if runs_left is None:
        left = None
    else:
        at_once = max(min(max_active_runs, runs_left), 1)
        left = (runs_left * p50 / at_once, runs_left * p90 / at_once)
    return Estimate(
        basis=basis,
        sample_size=len(durations),
        run_p50=dt.timedelta(seconds=p50),
        run_p90=dt.timedelta(seconds=p90),
        runs_remaining=runs_left,
        remaining_p50=None if left is None else dt.timedelta(seconds=left[0]),
        remaining_p90=None if left is None else dt.timedelta(seconds=left[1]),
    )


@dataclass(frozen=True)
class _Durations:
    finished: tuple[int, int]
    """The backfill's succeeded and failed runs when they were read."""
    read_at: dt.datetime
    basis: str
    durations: tuple[float, ...]


class DurationsCache:
    """The durations each backfill's estimate was last made from, read again only with news.

    A backfill's entry serves until one of its runs finishes (its succeeded or failed count
    moves: its own durations, or the basis, may change) or it is :data:`DURATIONS_MAX_AGE` old;
    so a Watch of a backfill, or many watchers of it, read its durations once per finished run
    at most, not once per poll. The estimate itself is made afresh each time, from the runs
    left in the view just read. At most ``size`` backfills are kept (the least recently used
    goes first).
    """

    def __init__(self, size: int = 1024, max_age: dt.timedelta = DURATIONS_MAX_AGE) -> None:
        self._size = size
        self._max_age = max_age
        self._entries: OrderedDict[int, _Durations] = OrderedDict()

    def get(self, view: BackfillView, now: dt.datetime) -> tuple[str, tuple[float, ...]] | None:
        """``(basis, durations)`` still good for ``view`` at ``now``; None: read them."""
        entry = self._entries.get(view.id)
        if (
            entry is None
            or entry.finished != _finished(view)
            or not entry.read_at <= now < entry.read_at + self._max_age
        ):
            return None
        self._entries.move_to_end(view.id)
        return entry.basis, entry.durations

    def put(self, view: BackfillView, now: dt.datetime, basis: str, durations: Sequence[float]) -> None:
        """Keep what was read for ``view`` at ``now``."""
        self._entries[view.id] = _Durations(_finished(view), now, basis, tuple(durations))
        self._entries.move_to_end(view.id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _finished(view: BackfillView) -> tuple[int, int]:
    return view.progress.succeeded, view.progress.failed


async def with_estimate(
    parts: Parts, view: BackfillView, cache: DurationsCache | None = None
) -> BackfillView:
    """``view`` with its estimate (none once it ended, or with no finished run to learn from).

    ``cache``: durations read for this backfill before, used while they are still good.
    """
    if view.state in (State.COMPLETED, State.CANCELLED):
        return view
    p = view.progress
    # While the plan is counted ``planned`` is the slots written so far: runs left unknown.
    runs_left = None if p.planned_is_counting else max(p.planned - p.skipped - p.succeeded - p.failed, 0)
    sample = parts.config.estimate_sample

    async def read(conn: AsyncConnection) -> tuple[str, tuple[float, ...]]:
        own = await backfill_run_durations(conn, view.id, sample)
        if len(own) >= OWN_RUNS_ENOUGH:
            return "backfill", tuple(own)
        return "history", tuple(await dag_run_durations(conn, view.dag_id, sample))

    now = parts.clock()
    kept = cache.get(view, now) if cache is not None else None
    if kept is None:
        kept = await parts.tx.read(read)
        if cache is not None:
            cache.put(view, now, *kept)
    basis, durations = kept
    return dataclasses.replace(view, estimate=estimate(durations, basis, runs_left, view.max_active_runs))
