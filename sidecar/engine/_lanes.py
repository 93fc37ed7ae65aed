"""An eager create's batches in two lanes: two batch transactions in flight, on two connections.

Writing a batch is bound by one PostgreSQL backend (the task instances' ``COPY``, their
indexes and foreign-key checks: docs/adr/0008-eager-write-path.md), so one batch after
another leaves the database's other cores idle while Python waits. In lanes, the next
batch is written while the one before it commits: two backends work at once.

Each lane's batch is written ahead of its turn. It knows its slots in advance (a plan is
fixed when the backfill is created: the slots after those of the batch in front of it),
so it writes their rows first, then claims the backfill (waiting for the batch in front
of it to commit) and checks that the cursor is exactly where that batch left it. Only
then does it advance the cursor and commit: its rows and the cursor still commit
together, so a crash loses and duplicates nothing (ADR 1). Anything else (the batch in
front failed or was rolled back, a cancel, a writer that is not a lane) rolls it back
whole, and the lanes stop; :func:`~sidecar.engine._materialize.materialize`'s batches,
one at a time, carry on from what committed.

While lanes write, they hold the backfill's writers' lock shared
(:func:`~sidecar.store.lock_writers`): the tick skips the backfill rather than write the
slots a lane is writing, and a writer that waits queues behind the lanes' batches in flight.
A cancel or a pause takes only the claim's row lock, which lanes hold only from their
claim to their commit: it is never held up by more than a batch.

Only PostgreSQL (SQLite has one writer), only a create's own eager writing (a retried
create and the tick write one batch at a time) of new runs (reprocess behaviour ``none``),
and at most ``LaneBudget.spare`` creates at once (each holds up to two more pooled
connections: the second lane, and the analysis of the tables it grows). Each lane's
transaction waits at most 10 s for a lock, then hands over to single batches. Cancelling
the create lets the batches in flight end (commit or roll back) first; after a second
cancel, and at shutdown (:meth:`LaneBudget.close`, before the pool is disposed), for at
most :data:`DRAIN_BOUND` (20 s), then what is left is cancelled (rolled back with its
connection). The create's single batches after the lanes are not waited for at shutdown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._materialize import (
    ANALYZE_GROWTH,
    Continuation,
    MaterializeResult,
    TableStatistics,
    count_batch,
    log_batch,
    plan_of,
    runs_per_batch,
)
from sidecar.engine._plans import cursor_of, run_of
from sidecar.planning import PlannedRun
from sidecar.store import (
    BatchResult,
    DagCatalog,
    PlanRecord,
    RunContext,
    Transactions,
    advance_cursor,
    claim_batch,
    is_database_failure,
    lock_writers,
    write_batch,
)
from sidecar.vocabulary import ReprocessBehavior

log = logging.getLogger(__name__)

#: Batch transactions in flight at once.
LANES = 2

#: The longest, in seconds, a lane's batch waits for a lock (a backstop: then single batches go on).
_LOCK_TIMEOUT_S = 10
_LOCK_TIMEOUT = sa.text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT_S}s'")

#: After a second cancel of the create (or at shutdown), the longest, in seconds, the
#: batches in flight are waited for before they are cancelled: each ends (commits or rolls
#: back) within its ``lock_timeout`` unless the database does not answer.
DRAIN_BOUND = 2.0 * _LOCK_TIMEOUT_S


_Task = TypeVar("_Task", bound=asyncio.Task[Any])


class LaneBudget:
    """How many creates may write in lanes at once (each holds one more pooled connection),
    and the lanes' batches in flight, which :meth:`close` lets end before the pool goes."""

    def __init__(self, spare: int = 2) -> None:
        self.spare = spare
        self._in_flight: set[asyncio.Task[Any]] = set()

    def take(self) -> bool:
        """Take a place if one is free (never waits)."""
        if self.spare <= 0:
            return False
        self.spare -= 1
        return True

    def give_back(self) -> None:
        """Return a place taken with :meth:`take`."""
        self.spare += 1

    def track(self, task: _Task) -> _Task:
        """Count ``task`` (a lane's batch) among those :meth:`close` waits for, until it ends."""
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def close(self) -> None:
        """Wait for the lanes' batches in flight (a shutdown: their creates were cancelled, and
        the pool is disposed next), at most :data:`DRAIN_BOUND`, then cancel what is left."""
        if self._in_flight and await _drain(list(self._in_flight), cancels=2):
            raise asyncio.CancelledError


class _Overtaken(Exception):
    """The backfill is not where a lane's batch expected it: the batch is rolled back."""


@dataclass(frozen=True)
class _Batch:
    """One lane's batch: its slots, and the cursor the batch in front of it leaves."""

    runs: list[PlannedRun]
    after: dict[str, Any] | None
    exhausted: bool


def _stopped(front: asyncio.Task[MaterializeResult | None] | None) -> bool:
    """Whether the batch in front of a lane's batch ended without committing."""
    return front is not None and front.done() and (front.cancelled() or front.result() is None)


def _same_slot(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(a["sort_ordinal"] == b["sort_ordinal"] and a["run_id"] == b["run_id"])


def lanes_apply(tx: Transactions, reprocess_behavior: ReprocessBehavior) -> bool:
    """Whether an eager create may write in lanes (before it takes a place of the budget).

    PostgreSQL only; never in a rehearsal; and only when no existing run is changed
    (reprocess behaviour ``none``): a lane that cleared an existing run would hold its
    locks while it waits for the batch in front of it, which Airflow's own clear of the
    same runs could then wait for in a cycle no database sees.
    """
    return tx.db.dialect == "postgresql" and tx.counted and reprocess_behavior is ReprocessBehavior.NONE


@dataclass(frozen=True)
class LanesResult:
    """What an eager create's lanes wrote."""

    made: int
    """The runs they made."""
    finished: bool
    """Whether their last batch finished the writing (nothing is left for single batches)."""


async def write_in_lanes(
    tx: Transactions,
    catalog: DagCatalog,
    start: Continuation,
    *,
    batch_size: int,
    now: dt.datetime,
    made_before: int,
    statistics: TableStatistics,
    budget: LaneBudget,
) -> LanesResult:
    """Write a materialising backfill's remaining slots in lanes, from where the create's own
    batch left it (``start``: its record, DAG and run context, not read again).

    ``statistics``: when to analyse the tables it grows (shared with the batches after it).
    ``budget``: the place taken, which also counts the batches in flight for a shutdown.

    The caller holds a place of its :class:`LaneBudget` and checked :func:`lanes_apply`.
    Returns early (with what was made) at the first batch that cannot commit as planned:
    the caller then writes the rest batch by batch. Anything that changed the backfill
    since ``start`` (a cancel, another writer) stops the first lane batch at its claim.
    """
    record, ctx = start.record, start.ctx
    backfill_id = record.backfill_id
    max_runs = runs_per_batch(start.loaded, batch_size)
    log.debug("backfill %s: writing in %s lanes", backfill_id, LANES)
    batches = _batches(record, max_runs)
    in_flight: deque[asyncio.Task[MaterializeResult | None]] = deque()
    analysing: asyncio.Task[None] | None = None
    made = 0
    cancels = 0
    try:
        while True:
            while len(in_flight) < LANES and (batch := next(batches, None)) is not None:
                front = in_flight[-1] if in_flight else None
                in_flight.append(
                    budget.track(
                        asyncio.create_task(_write_batch(tx, catalog, record, ctx, batch, front, now))
                    )
                )
                await asyncio.sleep(0)  # it sends its first statement before the next batch is planned
            if analysing is None and statistics.reached(made_before + made):
                # On a connection of its own, while the batches in flight write.
                analysing = asyncio.create_task(statistics.after(tx, made_before + made))
            if not in_flight:
                return LanesResult(made, finished=False)
            # Waited for, not awaited: cancelling this call must not cancel it mid-statement.
            await asyncio.wait({in_flight[0]})
            result = in_flight.popleft().result()
            if result is None:
                return LanesResult(made, finished=False)
            made += result.runs_created
            if result.exhausted:
                return LanesResult(made, finished=True)
    except asyncio.CancelledError:  # wherever it lands (a wait, or the yield after a launch)
        cancels = 1
        raise
    finally:
        # A batch behind one that stopped finds the cursor elsewhere and rolls back: let
        # it (cancelling it mid-statement would cost its connection), and the analysis too.
        if await _drain(list(in_flight), analysing, cancels=cancels):
            raise asyncio.CancelledError  # cancelled (again) while the batches in flight ended


async def _drain(
    batches: list[asyncio.Task[Any]], analysing: asyncio.Task[None] | None = None, *, cancels: int
) -> bool:
    """Let the tasks end, however often this call is cancelled; whether it was (``cancels``: before).

    Not ``asyncio.gather``, which cancels what it waits for when it is cancelled: a second
    cancel of the create (a shutdown after its client went) cut a lane's batch
    mid-statement. Each batch ends at a statement boundary (its commit or its rollback)
    within the lanes' ``lock_timeout``; so the wait is unbounded until a second cancel,
    then bounded by :data:`DRAIN_BOUND`, after which the batches left are cancelled. The
    analysis is cancelled at the second cancel (cutting an ANALYZE only rolls it back).
    """
    loop = asyncio.get_running_loop()
    tasks = [*batches, *([analysing] if analysing else [])]
    pending = set(tasks)
    cancelled = False
    deadline: float | None = None
    cut = False
    while pending:
        if cancels >= 2 and deadline is None:
            deadline = loop.time() + DRAIN_BOUND
            if analysing is not None:
                analysing.cancel()
        if deadline is not None and not cut and loop.time() >= deadline:
            log.warning("%d lane batches did not end within %g s: cancelled", len(pending), DRAIN_BOUND)
            for task in pending:
                task.cancel()
            cut = True  # then they end at once
        try:
            _, pending = await asyncio.wait(
                pending, timeout=None if deadline is None or cut else deadline - loop.time()
            )
        except asyncio.CancelledError:
            cancels += 1
            cancelled = True
    for task in tasks:  # retrieved, as gather(return_exceptions=True) did
        if not task.cancelled():
            task.exception()
    return cancelled


def lane_batch_size(remaining: int | None, max_runs: int) -> int:
    """The runs of a lane's batch: at most ``max_runs``, and the ``remaining`` slots (None:
    not counted yet) shared out in a multiple of :data:`LANES` batches of one size, so that
    no batch is left to write alone at the end (1,000 runs: two of 500, not one of 1,000)."""
    if remaining is None or remaining <= 0:
        return max_runs
    batches = -(-remaining // max_runs)
    batches += -batches % LANES
    return max(1, -(-remaining // batches))


def _batches(record: PlanRecord, max_runs: int) -> Iterator[_Batch]:
    """The backfill's remaining slots in lane batches, each with the cursor before it.

    A batch's slots are planned when it is asked for: while the plan's count says more
    slots follow, a batch is not its last, so the first lane starts before the second's
    slots are planned; otherwise (and without a count) the next batch's slots are planned
    first, to tell whether this one finishes the writing.
    """
    slots = plan_of(record).runs(after=run_of(record.cursor))
    remaining = None if record.planned_count is None else record.planned_count - record.written_count
    size = lane_batch_size(remaining, max_runs)
    after = record.cursor
    runs = list(itertools.islice(slots, size))
    while runs:
        following: list[PlannedRun] | None = None
        if remaining is None or (remaining := remaining - len(runs)) <= 0:
            following = list(itertools.islice(slots, size))
        # the plan's last batch finishes writing: no empty batch after it
        yield _Batch(runs, after, exhausted=following == [])
        after = cursor_of(runs[-1])
        runs = list(itertools.islice(slots, size)) if following is None else following


async def _write_batch(
    tx: Transactions,
    catalog: DagCatalog,
    record: PlanRecord,
    ctx: RunContext,
    batch: _Batch,
    front: asyncio.Task[MaterializeResult | None] | None,
    now: dt.datetime,
) -> MaterializeResult | None:
    """Write one lane's batch and commit it in its turn; None (rolled back) if it cannot be.

    ``front``: the batch in front of it in this process (None: the first), whose commit it
    waits for before its claim; the claim's check of the cursor covers every other writer.
    """

    async def work(conn: AsyncConnection) -> BatchResult:
        # Waits in this transaction are bounded: a lane waits in Python for the batch in
        # front of it, so a wait that crossed that one could be a cycle no database sees.
        await conn.execute(_LOCK_TIMEOUT)
        # Never queued behind a writer waiting for the lock: it would wait for this lane's
        # batch behind, which waits for this one.
        if not await lock_writers(conn, record.backfill_id, shared=True, wait=False) or _stopped(front):
            raise _Overtaken
        result = await write_batch(
            conn,
            ctx,
            batch.runs,
            reprocess_behavior=record.reprocess_behavior,
            conf_given=record.dag_run_conf_given,
            now=now,
            catalog=catalog,
            statistics_growth=ANALYZE_GROWTH,
        )
        if front is not None:
            await asyncio.wait({front})  # not cancelled with this one
            if _stopped(front):
                raise _Overtaken
        claimed = await claim_batch(conn, record.backfill_id, wait=True)
        if claimed is None or not _same_slot(claimed.cursor, batch.after):
            raise _Overtaken
        await advance_cursor(
            conn,
            claimed,
            written=len(batch.runs),
            skipped=result.skipped,
            cursor=cursor_of(batch.runs[-1]),
            exhausted=batch.exhausted,
            now=now,
        )
        return result

    started = time.perf_counter()
    try:
        written = await tx.write(work)
    except _Overtaken:
        return None
    except Exception as exc:  # the batches that follow, one at a time, meet it again and report it
        log.log(
            logging.INFO if is_database_failure(exc) else logging.WARNING,
            "backfill %s: a lane's batch failed (%s); writing on one batch at a time",
            record.backfill_id,
            type(exc).__name__,
            exc_info=True,
        )
        return None
    result = MaterializeResult(written.created + written.reprocessed, len(batch.runs), batch.exhausted)
    count_batch(result, started)
    log_batch(record.backfill_id, batch.runs, written)
    return result
