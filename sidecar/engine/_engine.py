"""``BackfillEngine``: the facade over creating, reading, steering and ticking backfills.

Each operation lives in its own module (``_create``, ``_reads``, ``_steer``,
``_tick``); this class holds what they share and serialises ticks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from sidecar.auth import Access, PageTokens
from sidecar.engine import _create, _estimates, _reads, _steer, _tick, _warm_up
from sidecar.engine._config import EngineConfig, Parts, utcnow
from sidecar.engine._counting import BackgroundCounter
from sidecar.engine._lanes import LaneBudget
from sidecar.engine._model import BackfillSpec, BackfillView, DryRun, SlotView
from sidecar.engine._notify import Notifier
from sidecar.engine._offload import PlanningPool
from sidecar.engine._policies import SchedulerPolicies
from sidecar.engine._requests import check_list_filter
from sidecar.engine._tick import TickResult
from sidecar.observability import DATABASE_ERRORS, TICK_SECONDS
from sidecar.store import (
    DagCatalog,
    Database,
    Failure,
    RecordedEvent,
    Transactions,
    backfill_stats,
    events_after,
    page_token_key,
)
from sidecar.vocabulary import State

__all__ = ["BackfillEngine"]

log = logging.getLogger(__name__)


#: The access of a call without authentication, and the default of the engine's own callers
#: (tests, the bench): the servicer always passes the caller's.
UNRESTRICTED = Access.unrestricted()


def _count_failure(failure: Failure) -> None:
    DATABASE_ERRORS.labels(failure.value).inc()


class BackfillEngine:
    """Plans and writes backfills into Airflow's metadata database."""

    def __init__(
        self, db: Database, config: EngineConfig | None = None, *, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.db = db
        self.config = config or EngineConfig()
        self.catalog = DagCatalog()
        self.tx = Transactions(db, self.config.retry, _count_failure)
        self._parts = Parts(
            tx=self.tx,
            catalog=self.catalog,
            config=self.config,
            clock=clock,
            lanes=LaneBudget(self.config.lane_creates),
        )
        self._counter = BackgroundCounter(self.tx)
        #: Where calls step their plans: off the event loop, bounded in threads and CPU.
        self.planning = PlanningPool(
            workers=self.config.planning_workers,
            queue=self.config.planning_queue,
            cpu_seconds=self.config.planning_cpu_seconds,
        )
        #: Cluster policies the schedulers' shims report (non-default mutation hooks refuse).
        self.policies = SchedulerPolicies()
        self._tick_lock = asyncio.Lock()
        self._tick_task: asyncio.Task[TickResult] | None = None
        self._page_tokens: PageTokens | None = None
        #: Records backfill events and delivers them to webhooks (``serve`` runs its passes).
        self.notifier = Notifier(self._parts, self.config.webhooks)
        #: The durations each backfill's estimate was made from (Watch and Get polls reuse them).
        self._durations = _estimates.DurationsCache()

    async def create(
        self,
        spec: BackfillSpec,
        *,
        request_id: str | None = None,
        validate_only: bool = False,
        dry_run_limit: int | None = None,
        principal: str = "",
    ) -> BackfillView | DryRun:
        """Validate, plan and create a backfill (or, with ``validate_only``, return its plan).

        ``request_id`` is scoped to ``principal`` (the authenticated caller; "" without auth).

        Raises:
            SidecarError: a subclass for each failed check, in Airflow's order.
        """
        return await _create.create(
            self._parts,
            self.policies,
            self._counter,
            self.planning,
            spec,
            request_id=request_id,
            validate_only=validate_only,
            dry_run_limit=dry_run_limit,
            principal=principal,
        )

    async def get(
        self, backfill_id: int, *, access: Access = UNRESTRICTED, with_estimate: bool = False
    ) -> BackfillView:
        """One backfill with its live progress, authorised for ``access`` on the row read.

        ``with_estimate``: also estimate how long its unfinished runs take (one more bounded read,
        only when one of its runs finished since the last, see :class:`_estimates.DurationsCache`).

        Raises:
            BackfillNotFound: none, or of a DAG the caller may not read (the same error).
            PermissionDenied: readable, but not for the call's action.
        """
        view = await _reads.get(self._parts, backfill_id, access)
        return await _estimates.with_estimate(self._parts, view, self._durations) if with_estimate else view

    async def list_backfills(
        self,
        *,
        dag_id: str | None,
        state: State | None,
        page_size: int,
        before_id: int | None,
        skip: int = 0,
        ascending: bool = False,
        access: Access = UNRESTRICTED,
    ) -> tuple[list[BackfillView], int | None, int | None]:
        """A page of the backfills ``access`` may read, the id to continue past, and how many match.

        The order is newest first unless ``ascending``. The second value is None on the last
        page. The third is the number of backfills matching the filter when the database can
        count them for this caller (a ``dag_id`` it may read, or a caller who reads every
        DAG), else None: then the page is the policy-filtered scan (:func:`_reads.list_views`),
        which may come back short (but carries an id) and takes no ``skip`` or ordering.

        Raises:
            InvalidArgument: a ``dag_id`` filter no DAG id could match (control characters, too
                long), or ``skip``/``ascending`` on a listing the policy must filter row by row.
        """
        check_list_filter(dag_id)
        return await _reads.list_views(
            self._parts,
            access,
            dag_id=dag_id,
            state=state,
            page_size=page_size,
            before_id=before_id,
            skip=skip,
            ascending=ascending,
        )

    async def list_runs(
        self, backfill_id: int, *, page_size: int, after_ordinal: int, access: Access = UNRESTRICTED
    ) -> tuple[list[SlotView], int | None]:
        """A page of a backfill's slots in plan order, written ones first, then pending ones.

        Raises:
            BackfillNotFound: none, or of a DAG the caller may not read.
        """
        return await _reads.list_slots(
            self._parts,
            self.planning,
            backfill_id,
            access,
            page_size=page_size,
            after_ordinal=after_ordinal,
        )

    async def set_paused(
        self, backfill_id: int, paused: bool, *, access: Access = UNRESTRICTED
    ) -> BackfillView:
        """Pause or unpause; idempotent. The ledger authorises ``access`` on the row it locks.

        Raises:
            BackfillNotFound, PermissionDenied, InvalidTransition: the backfill has ended.
        """
        view = await _steer.pause(self._parts, backfill_id, paused, access)
        await self._record_events(backfill_id)
        return view

    async def cancel(
        self, backfill_id: int, *, terminate_running: bool = False, access: Access = UNRESTRICTED
    ) -> BackfillView:
        """Stop creating runs, fail the queued ones, complete the backfill (see ``_steer.cancel``).

        The ledger authorises ``access`` on the row it locks, before anything changes.

        Raises:
            BackfillNotFound, PermissionDenied, InvalidTransition: the backfill has ended.
        """
        view = await _steer.cancel(self._parts, backfill_id, access, terminate_running=terminate_running)
        await self._record_events(backfill_id)
        return view

    async def _record_events(self, backfill_id: int) -> None:
        """Record the event a call just caused, at once (the notifier's next pass would, too)."""
        try:
            await self.notifier.record([backfill_id])
        except Exception:  # the change is committed: the next pass records its event
            log.exception("recording the event of backfill %d failed; the next pass records it", backfill_id)

    async def events(self, backfill_id: int, after_id: int, limit: int = 100) -> list[RecordedEvent]:
        """The backfill's events after ``after_id``, oldest first (the caller authorised the backfill)."""
        return await self.tx.read(lambda conn: events_after(conn, backfill_id, after_id, limit))

    async def page_tokens(self) -> PageTokens:
        """The page-token codec under the key every replica shares (read once from the ledger)."""
        if self._page_tokens is None:
            self._page_tokens = PageTokens(await self.tx.read(page_token_key))
        return self._page_tokens

    async def warm_up(self) -> bool:
        """Rehearse a create and roll it back, so that the first real one finds everything
        compiled and prepared (``serve`` calls it at start; :mod:`sidecar.engine._warm_up`).
        Returns whether a DAG was there to rehearse it with."""
        return await _warm_up.warm_up(self._parts, self.policies, self.planning)

    async def close(self) -> None:
        """Stop background work (plan counts, webhook deliveries; a restart resumes it), and let
        the lanes' batches in flight end, at most ``DRAIN_BOUND`` (before the pool is disposed)."""
        await self._parts.lanes.close()
        await self._counter.cancel_all()
        await self.notifier.close()

    async def database_ready(self) -> bool:
        """Whether the metadata database answers (the readiness probe)."""
        return await self.db.ping()

    async def stats(self) -> tuple[dict[str, int], list[tuple[int, str, int]]]:
        """Backfills by state and queued runs per open backfill, for metrics."""
        return await self.tx.read(backfill_stats)

    def tick_soon(self) -> asyncio.Task[TickResult]:
        """The running tick, or a new one: callers share it instead of queueing behind each other.

        Callers await it under ``asyncio.shield`` so that a caller's deadline never
        interrupts a batch.
        """
        if self._tick_task is None or self._tick_task.done():
            self._tick_task = asyncio.create_task(self.tick(), name="sidecar-tick")
        return self._tick_task

    async def tick(self) -> TickResult:
        """Top up every materialising backfill to its window and complete finished ones.

        Called by the shim once per scheduler loop, and by the server's own timer.
        """
        async with self._tick_lock:
            with TICK_SECONDS.time():
                return await _tick.tick(self._parts, self.policies, self._counter)
