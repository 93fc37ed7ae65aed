"""The gRPC servicers: protobuf in, engine call, protobuf out; errors mapped in ``_errors``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.api._convert import (
    STATES_IN,
    ascending_of,
    backfill_id_of,
    backfill_message,
    event_message,
    page_size_of,
    slot_message,
    spec_of,
    summary_message,
)
from sidecar.api._errors import streaming, unary
from sidecar.api._limits import DRY_RUN_BURST, DRY_RUN_RATE_PER_MINUTE, RateLimiter
from sidecar.auth import PageTokens, current_access, current_principal
from sidecar.engine import BackfillEngine, DryRun, State
from sidecar.errors import InvalidArgument

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]

#: The most events one WatchBackfill update carries (more follow in the next update at once).
WATCH_EVENTS = 100


def principal_of(context: Ctx) -> str | None:
    """The authenticated caller, recorded as the backfill's triggering user.

    The auth interceptor publishes it for the duration of the call; None when the server
    runs with ``no_auth``.
    """
    principal = current_principal()
    return principal.name if principal is not None else None


class BackfillServicer(backfill_pb2_grpc.BackfillServiceServicer):
    """The public BackfillService."""

    def __init__(
        self,
        engine: BackfillEngine,
        *,
        watch_interval: float = 1.0,
        limiter: RateLimiter | None = None,
        dry_run_limiter: RateLimiter | None = None,
    ) -> None:
        self._engine = engine
        self._watch_interval = watch_interval
        self._limiter = limiter or RateLimiter()
        self._dry_run_limiter = dry_run_limiter or RateLimiter(
            rate_per_minute=DRY_RUN_RATE_PER_MINUTE, burst=DRY_RUN_BURST
        )

    @unary
    async def CreateBackfill(
        self, request: pb.CreateBackfillRequest, context: Ctx
    ) -> pb.CreateBackfillResponse:
        spec = spec_of(request, principal_of(context))
        if request.dry_run_view not in pb.DryRunView.values():
            raise InvalidArgument(f"unknown dry run view {request.dry_run_view}", field="dry_run_view")
        if request.validate_only:  # planning costs CPU: dry runs have a bucket of their own
            self._dry_run_limiter.check(spec.triggering_user_name, "dry-run")
        else:
            self._limiter.check(spec.triggering_user_name, "create")
        result = await self._engine.create(
            spec,
            request_id=request.request_id or None,
            validate_only=request.validate_only,
            dry_run_limit=0
            if request.dry_run_view == pb.DRY_RUN_VIEW_SUMMARY
            else request.dry_run_page_size or None,
            principal=current_access().owner,
        )
        if isinstance(result, DryRun):
            return pb.CreateBackfillResponse(
                backfill=backfill_message(result.backfill),
                planned_runs=[slot_message(s) for s in result.runs],
                planned_runs_truncated=result.truncated,
                planned_count_is_lower_bound=not result.planned_exact,
                summary=summary_message(result.summary),
            )
        return pb.CreateBackfillResponse(backfill=backfill_message(result))

    @unary
    async def GetBackfill(self, request: pb.GetBackfillRequest, context: Ctx) -> pb.GetBackfillResponse:
        view = await self._engine.get(
            backfill_id_of(request.name), access=current_access(), with_estimate=True
        )
        return pb.GetBackfillResponse(backfill=backfill_message(view))

    @unary
    async def ListBackfills(self, request: pb.ListBackfillsRequest, context: Ctx) -> pb.ListBackfillsResponse:
        state: State | None = None
        if request.state:
            if request.state not in STATES_IN:
                raise InvalidArgument(f"unknown state {request.state}", field="state")
            state = STATES_IN[request.state]
        if request.skip < 0:
            raise InvalidArgument("skip must not be negative", field="skip")
        ascending = ascending_of(request.order_by)
        access = current_access()
        # A token continues this listing (filters and order) for this caller only, and says
        # nothing it could not read.
        tokens = await self._engine.page_tokens()
        bound = PageTokens.context("backfills", access.owner, request.dag_id, request.state, int(ascending))
        views, next_past, total = await self._engine.list_backfills(
            dag_id=request.dag_id or None,
            state=state,
            page_size=page_size_of(request.page_size, 50, 500),
            before_id=tokens.read(request.page_token, bound),
            skip=request.skip,
            ascending=ascending,
            access=access,
        )
        return pb.ListBackfillsResponse(
            backfills=[backfill_message(v) for v in views],
            next_page_token=tokens.issue(next_past, bound) if next_past is not None else "",
            total_size=total or 0,
        )

    @unary
    async def PauseBackfill(self, request: pb.PauseBackfillRequest, context: Ctx) -> pb.PauseBackfillResponse:
        self._limiter.check(principal_of(context), "pause")
        view = await self._engine.set_paused(backfill_id_of(request.name), True, access=current_access())
        return pb.PauseBackfillResponse(backfill=backfill_message(view))

    @unary
    async def UnpauseBackfill(
        self, request: pb.UnpauseBackfillRequest, context: Ctx
    ) -> pb.UnpauseBackfillResponse:
        self._limiter.check(principal_of(context), "unpause")
        view = await self._engine.set_paused(backfill_id_of(request.name), False, access=current_access())
        return pb.UnpauseBackfillResponse(backfill=backfill_message(view))

    @unary
    async def CancelBackfill(
        self, request: pb.CancelBackfillRequest, context: Ctx
    ) -> pb.CancelBackfillResponse:
        self._limiter.check(principal_of(context), "cancel")
        view = await self._engine.cancel(
            backfill_id_of(request.name), terminate_running=request.terminate_running, access=current_access()
        )
        return pb.CancelBackfillResponse(backfill=backfill_message(view))

    @unary
    async def ListBackfillRuns(
        self, request: pb.ListBackfillRunsRequest, context: Ctx
    ) -> pb.ListBackfillRunsResponse:
        backfill_id = backfill_id_of(request.parent, "parent")
        access = current_access()
        tokens = await self._engine.page_tokens()
        bound = PageTokens.context("runs", access.owner, backfill_id)
        slots, next_after = await self._engine.list_runs(
            backfill_id,
            page_size=page_size_of(request.page_size, 100, 1000),
            after_ordinal=tokens.read(request.page_token, bound) or 0,
            access=access,
        )
        return pb.ListBackfillRunsResponse(
            runs=[slot_message(s) for s in slots],
            next_page_token=tokens.issue(next_after, bound) if next_after is not None else "",
        )

    @streaming
    async def WatchBackfill(
        self, request: pb.WatchBackfillRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchBackfillResponse]:
        backfill_id = backfill_id_of(request.name)
        access = current_access()
        last: pb.Backfill | None = None
        seen = 0  # the last event reported
        while True:
            # Every update is read, and authorised, afresh; then the events since the last one.
            message = backfill_message(await self._engine.get(backfill_id, access=access, with_estimate=True))
            ended = message.state in (pb.Backfill.STATE_COMPLETED, pb.Backfill.STATE_CANCELLED)
            if ended:  # its last event may not be recorded yet: record it before the stream ends
                await self._engine.notifier.record([backfill_id])
            events = await self._engine.events(backfill_id, seen, WATCH_EVENTS)
            comparable = pb.Backfill()
            comparable.CopyFrom(message)
            comparable.ClearField("update_time")
            comparable.ClearField("estimate")  # follows the counts; alone it is no news
            if events or last is None or comparable != last:
                yield pb.WatchBackfillResponse(backfill=message, events=[event_message(e) for e in events])
                last = comparable
                seen = events[-1].id if events else seen
            if ended and len(events) < WATCH_EVENTS:
                return
            if len(events) < WATCH_EVENTS:
                await asyncio.sleep(self._watch_interval)


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    """The scheduler-facing service the shim calls once per loop."""

    def __init__(self, engine: BackfillEngine) -> None:
        self._engine = engine

    @unary
    async def Tick(self, request: scheduler_pb2.TickRequest, context: Ctx) -> scheduler_pb2.TickResponse:
        self._engine.policies.report(request.scheduler_id, request.task_instance_mutation_hook)
        result = await asyncio.shield(self._engine.tick_soon())
        return scheduler_pb2.TickResponse(
            runs_written=result.runs_written,
            backfills_completed=result.backfills_completed,
            materializing_backfill_ids=result.materializing,
        )
