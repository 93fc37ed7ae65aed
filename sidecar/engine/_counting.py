"""Sizing a plan without holding up creation or the event loop.

Evenly spaced schedules are counted arithmetically at once, and crons are bounded from
their expression (:func:`runs_upper_bound`). Others (a cron in a time zone with daylight
saving, say) must be stepped slot by slot — 100,000 hourly slots take about a minute — so
creation writes the first runs at once and the count is made in a planning worker
afterwards (``planned_count`` stays NULL meanwhile; a restart recounts). The limit on runs
per backfill is checked before anything is written, from a cheap upper bound when it
suffices: no built-in schedule fires more than once a minute. Every stepping runs in a
:class:`PlanningPool` worker under a budget, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.engine._offload import PlanningPool
from sidecar.engine._plans import build_plan
from sidecar.errors import InvalidArgument, NoRunsToCreate
from sidecar.planning import BackfillPlan, first_sizes, full_count
from sidecar.store import PlanRecord, Transactions, plan_record, record_planned_count
from sidecar.vocabulary import counted

log = logging.getLogger(__name__)

#: The most runs one backfill may plan (10 million: 1,141 years daily, 19 years by the minute).
MAX_RUNS_PER_BACKFILL = 10_000_000


async def size_before_create(pool: PlanningPool, plan: BackfillPlan, dag_id: str, limit: int) -> int | None:
    """The plan's exact size when cheap, else None (to be counted after creation).

    Raises:
        NoRunsToCreate: the plan is empty.
        InvalidArgument: the plan holds more than ``limit`` runs (field ``backfill.to_date``).
        InvalidArgument: also when the planning budget ran out before the size was known.
        ResourceExhausted: too many planning jobs are waiting.
    """
    first, planned, at_most, cut = await pool.run(first_sizes, plan, limit)
    if cut:
        raise InvalidArgument(
            f"sizing this range against the limit of {counted(limit, 'run', spec=',')} needs more planning than one "
            "call may spend; split it into shorter ranges",
            field="backfill.to_date",
        )
    if first == 0:
        raise NoRunsToCreate(
            f"No runs to create for Dag {dag_id} in the range [{plan.from_date}, {plan.to_date}]",
            field="backfill.from_date",
        )
    if at_most > limit:
        raise InvalidArgument(
            f"the range holds more than {counted(limit, 'run', spec=',')}, the most one backfill may have; split it",
            field="backfill.to_date",
        )
    return planned


def plan_of(record: PlanRecord) -> BackfillPlan:
    """The plan of a stored backfill, rebuilt from its stored parameters."""
    return build_plan(
        record.timetable, record.dag_id, record.from_date, record.to_date, record.run_backwards, record.cutoff
    )


async def count_in_background(pool: PlanningPool, tx: Transactions, backfill_id: int) -> None:
    """Count a stored backfill's plan in a planning worker and record it (if still unknown)."""
    record = await tx.read(lambda conn: plan_record(conn, backfill_id))
    if record is None or record.planned_count is not None:
        return
    plan = plan_of(record)
    planned = await pool.run(full_count, plan, cpu_seconds=None)
    if planned is None:
        return  # stopped (shutdown): the next tick recounts
    await tx.write(lambda conn: record_planned_count(conn, backfill_id, planned))
    log.info("backfill %s: %s planned (counted in the background)", backfill_id, counted(planned, "slot"))


#: Seconds before a failed count is tried again; each failure in a row doubles the wait ...
RETRY_FIRST = 30.0
#: ... up to this (a count that always fails is tried twice an hour, not on every tick).
RETRY_MOST = 1800.0
#: Doublings past which the wait is RETRY_MOST anyway (a bigger power of two overflows a float).
_MOST_DOUBLINGS = 16


def retry_wait(times: int) -> float:
    """Seconds before a count that failed ``times`` in a row is tried again."""
    return min(RETRY_FIRST * 2.0 ** min(times - 1, _MOST_DOUBLINGS), RETRY_MOST)


@dataclass(frozen=True)
class _Failed:
    """A backfill whose count failed ``times`` in a row: not tried again before ``until``."""

    times: int
    until: float


class BackgroundCounter:
    """At most one counting task per backfill, kept referenced until it ends.

    Counts run in their own one-worker pool without a CPU budget (they must finish), so
    they never take a worker from a caller, and stop on :meth:`cancel_all`. A count that
    failed is tried again after a wait that doubles with each failure in a row (from
    :data:`RETRY_FIRST` to :data:`RETRY_MOST`; in memory, per backfill), and each failure is
    logged once, with that wait, however often the ticks ask meanwhile.
    """

    def __init__(
        self,
        tx: Transactions,
        pool: PlanningPool | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tx = tx
        self._pool = pool or PlanningPool(workers=1, queue=1_000_000, cpu_seconds=None, name="count")
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._clock = clock
        self._failed: dict[int, _Failed] = {}

    def ensure(self, backfill_id: int) -> None:
        """Start counting ``backfill_id`` unless it is being counted, or waits to be tried again."""
        task = self._tasks.get(backfill_id)
        if task is not None and not task.done():
            return
        failed = self._failed.get(backfill_id)
        if failed is not None and self._clock() < failed.until:
            return
        task = asyncio.create_task(self._run(backfill_id), name=f"sidecar-count-{backfill_id}")
        self._tasks[backfill_id] = task

    def forget_all_but(self, uncounted: set[int]) -> None:
        """Drop the failure records of backfills not in ``uncounted`` (ended, or counted since).

        Memory stays bounded, and a backfill id used again (SQLite may reuse a row id) never
        inherits another backfill's wait.
        """
        for backfill_id in self._failed.keys() - uncounted:
            del self._failed[backfill_id]

    async def _run(self, backfill_id: int) -> None:
        try:
            await count_in_background(self._pool, self._tx, backfill_id)
        except Exception:
            before = self._failed.get(backfill_id)
            times = 1 if before is None else before.times + 1
            wait = retry_wait(times)
            self._failed[backfill_id] = _Failed(times, self._clock() + wait)
            log.exception(
                "backfill %s: counting its plan failed (failure %d in a row); trying again in %g s",
                backfill_id,
                times,
                wait,
            )
        else:
            self._failed.pop(backfill_id, None)
        finally:
            self._tasks.pop(backfill_id, None)

    async def cancel_all(self) -> None:
        """Stop every counting task (shutdown); the next start recounts."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
