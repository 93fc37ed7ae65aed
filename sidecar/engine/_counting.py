"""Sizing a plan without holding up creation or the event loop.

Evenly spaced schedules are counted arithmetically at once. Others (a cron in a time zone
with daylight saving, say) must be stepped slot by slot — 100,000 hourly slots take about a
minute — so creation writes the first runs at once and the count is made in a worker thread
afterwards (``planned_count`` stays NULL meanwhile; a restart recounts). The limit on runs
per backfill is checked before anything is written, from a cheap upper bound when it
suffices: no built-in schedule fires more than once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sidecar.engine._plans import build_plan
from sidecar.errors import InvalidArgument, NoRunsToCreate
from sidecar.planning import BackfillPlan
from sidecar.store import PlanRecord, Transactions, plan_record, record_planned_count

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Plans of at most this many runs are counted exactly before creation even when they must be
#: stepped (about 30 ms of croniter at most); longer ones are counted in the background.
EXACT_COUNT_BUDGET = 200

#: The most runs one backfill may plan (10 million: 1,141 years daily, 19 years by the minute).
MAX_RUNS_PER_BACKFILL = 10_000_000


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """Run CPU-bound ``work`` off the event loop, in a daemon thread.

    Unlike ``asyncio.to_thread``, shutdown never waits for it: a count cut short by a
    restart is simply made again.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result: T | None = work()
            error: BaseException | None = None
        except BaseException as exc:  # delivered to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=target, name="sidecar-plan-count", daemon=True).start()
    return await future


async def size_before_create(plan: BackfillPlan, dag_id: str, limit: int) -> int | None:
    """The plan's exact size when cheap, else None (to be counted after creation).

    Raises:
        NoRunsToCreate: the plan is empty.
        InvalidArgument: the plan holds more than ``limit`` runs (field ``backfill.to_date``).
    """
    if next(iter(plan.runs()), None) is None:
        raise NoRunsToCreate(
            f"No runs to create for Dag {dag_id} in the range [{plan.from_date}, {plan.to_date}]",
            field="backfill.from_date",
        )
    if plan.counts_fast:
        planned: int | None = plan.count()
        at_most = planned
    elif (small := plan.count_at_most(EXACT_COUNT_BUDGET)) <= EXACT_COUNT_BUDGET:
        planned = at_most = small  # a short plan: stepping it costs a few milliseconds
    else:
        planned = None
        minutes = (plan.to_date - plan.from_date).total_seconds() / 60
        at_most = int(minutes) + 2  # at most one run a minute
        if at_most > limit:
            at_most = await in_daemon_thread(lambda: plan.count_at_most(limit))
    if at_most is not None and at_most > limit:
        raise InvalidArgument(
            f"the range holds more than {limit:,} runs, the most one backfill may have; split it",
            field="backfill.to_date",
        )
    return planned


def plan_of(record: PlanRecord) -> BackfillPlan:
    """The plan of a stored backfill, rebuilt from its stored parameters."""
    return build_plan(
        record.timetable, record.dag_id, record.from_date, record.to_date, record.run_backwards, record.cutoff
    )


async def count_in_background(tx: Transactions, backfill_id: int) -> None:
    """Count a stored backfill's plan in a worker thread and record it (if still unknown)."""
    record = await tx.read(lambda conn: plan_record(conn, backfill_id))
    if record is None or record.planned_count is not None:
        return
    planned = await in_daemon_thread(plan_of(record).count)
    await tx.write(lambda conn: record_planned_count(conn, backfill_id, planned))
    log.info("backfill %s: %s slots planned (counted in the background)", backfill_id, planned)


class BackgroundCounter:
    """At most one counting task per backfill, kept referenced until it ends."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def ensure(self, backfill_id: int) -> None:
        """Start counting ``backfill_id`` unless it is being counted already."""
        task = self._tasks.get(backfill_id)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._run(backfill_id), name=f"sidecar-count-{backfill_id}")
        self._tasks[backfill_id] = task

    async def _run(self, backfill_id: int) -> None:
        try:
            await count_in_background(self._tx, backfill_id)
        except Exception:
            log.exception("backfill %s: counting its plan failed; the next tick retries", backfill_id)
        finally:
            self._tasks.pop(backfill_id, None)

    async def cancel_all(self) -> None:
        """Stop every counting task (shutdown); the next start recounts."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
