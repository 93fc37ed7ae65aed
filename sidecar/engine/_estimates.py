"""Estimates: how long a backfill's unfinished runs should take, from finished runs' durations.

The model is the simplest one that a user can check by hand: a run takes about as long as
the DAG's runs took lately (the median, and the 90th percentile as a pessimistic bound), and
the backfill runs ``max_active_runs`` of them at a time, so the runs left take
``runs_left x duration / min(max_active_runs, runs_left)``. Before a backfill's own runs have
finished the durations come from the DAG's latest finished runs (``history``); once
:data:`OWN_RUNS_ENOUGH` of its own have finished, from those (``backfill``): the estimate
corrects itself as the backfill goes, for a DAG whose old runs were shorter or longer.

Reads are bounded (the latest ``EngineConfig.estimate_sample`` finished runs, along an index);
a DAG with no finished run has no estimate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._config import Parts
from sidecar.engine._model import BackfillView, Estimate
from sidecar.store import backfill_run_durations, dag_run_durations
from sidecar.vocabulary import State

__all__ = ["OWN_RUNS_ENOUGH", "estimate", "percentile", "with_estimate"]

#: The backfill's own finished runs from which its estimate stops using the DAG's history.
OWN_RUNS_ENOUGH = 5


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, interpolated linearly between order statistics."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def estimate(durations: Sequence[float], basis: str, runs_left: int, max_active_runs: int) -> Estimate | None:
    """The estimate for ``runs_left`` runs from ``durations`` (seconds); None without durations."""
    if not durations:
        return None
    p50, p90 = percentile(durations, 0.5), percentile(durations, 0.9)
    at_once = max(min(max_active_runs, runs_left), 1)
    return Estimate(
        basis=basis,
        sample_size=len(durations),
        run_p50=dt.timedelta(seconds=p50),
        run_p90=dt.timedelta(seconds=p90),
        runs_remaining=runs_left,
        remaining_p50=dt.timedelta(seconds=runs_left * p50 / at_once),
        remaining_p90=dt.timedelta(seconds=runs_left * p90 / at_once),
    )


async def with_estimate(parts: Parts, view: BackfillView) -> BackfillView:
    """``view`` with its estimate (none once it ended, or with no finished run to learn from)."""
    if view.state in (State.COMPLETED, State.CANCELLED):
        return view
    p = view.progress
    runs_left = max(p.planned - p.skipped - p.succeeded - p.failed, 0)
    sample = parts.config.estimate_sample

    async def read(conn: AsyncConnection) -> tuple[str, list[float]]:
        own = await backfill_run_durations(conn, view.id, sample)
        if len(own) >= OWN_RUNS_ENOUGH:
            return "backfill", own
        return "history", await dag_run_durations(conn, view.dag_id, sample)

    basis, durations = await parts.tx.read(read)
    return dataclasses.replace(view, estimate=estimate(durations, basis, runs_left, view.max_active_runs))
