"""Creating a backfill: checks in Airflow's order, the insert, the first runs; or a dry run."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.auth import Access
from sidecar.catalog import DagTemplate
from sidecar.engine._config import Parts
from sidecar.engine._counting import BackgroundCounter, size_before_create
from sidecar.engine._dry_run import dry_run
from sidecar.engine._lanes import lanes_apply, write_in_lanes
from sidecar.engine._materialize import (
    MaterializeResult,
    TableStatistics,
    count_batch,
    materialize,
    materialize_batch,
)
from sidecar.engine._model import BackfillSpec, BackfillView, DryRun, spec_fields
from sidecar.engine._offload import PlanningPool
from sidecar.engine._pinning import Pin, pin_of
from sidecar.engine._plans import build_plan, check_dag, check_params, resolve_partition_keys
from sidecar.engine._policies import SchedulerPolicies
from sidecar.engine._reads import get
from sidecar.engine._requests import check_request
from sidecar.engine._subsets import selected_tasks
from sidecar.engine._webhook_urls import check_webhook_url
from sidecar.errors import AlreadyExists, InvalidArgument
from sidecar.planning import BackfillPlan
from sidecar.store import (
    NewBackfill,
    check_room,
    find_request,
    insert_backfill,
    register_backfill,
)
from sidecar.vocabulary import Mode, State, counted

log = logging.getLogger(__name__)

#: A create answers with the backfill its caller made (under its own request id): the
#: interceptor has authorised the create on the request's DAG.
_CREATOR = Access.unrestricted()


async def create(
    parts: Parts,
    policies: SchedulerPolicies,
    counter: BackgroundCounter,
    pool: PlanningPool,
    spec: BackfillSpec,
    *,
    request_id: str | None,
    validate_only: bool,
    dry_run_limit: int | None,
    principal: str = "",
) -> BackfillView | DryRun:
    """Validate, plan and create a backfill (or, with ``validate_only``, return its plan).

    ``request_id`` is looked up and stored among ``principal``'s own ("" without auth).

    Raises:
        SidecarError: a subclass for each failed check, in Airflow's order.
    """
    check_request(spec, request_id, dry_run_limit)
    if spec.webhook_url is not None:
        check_webhook_url(spec.webhook_url, parts.config.webhooks)
    fingerprint = fingerprint_of(spec)
    if request_id and not validate_only:
        previous = await by_request_id(parts, principal, request_id, fingerprint)
        if previous is not None:
            return await settled(parts, previous)
    now = parts.clock()

    async def check(
        conn: AsyncConnection,
    ) -> tuple[Any, BackfillPlan, Pin, DagTemplate, BackfillSpec] | BackfillView | DryRun:
        loaded = check_dag(spec, await parts.catalog.load(conn, spec.dag_id))
        if not validate_only:
            policies.check()
        timetable = loaded.template.timetable
        resolved = resolve_partition_keys(spec, loaded)
        plan = build_plan(
            timetable, spec.dag_id, resolved.from_date, resolved.to_date, spec.run_backwards, now
        )
        if not validate_only:
            try:
                await check_room(
                    conn,
                    spec.dag_id,
                    resolved.from_date,
                    resolved.to_date,
                    concurrent=spec.controls.concurrent,
                )
            except AlreadyExists:
                # A concurrent create with the same request_id may have won the race.
                if request_id and (
                    previous := await by_request_id(parts, principal, request_id, fingerprint)
                ):
                    return previous
                raise
        check_params(resolved, loaded, now)
        pin = pin_of(resolved, loaded, parts.config.rerun_with_latest_version)
        return timetable, plan, pin, loaded.template, resolved

    checked = await parts.tx.read(check)
    if isinstance(checked, BackfillView):
        return await settled(parts, checked)
    if not isinstance(checked, tuple):
        return checked
    timetable, plan, pin, template, spec = checked
    selected = await selected_tasks(template, spec.task_selection)
    if validate_only:  # planned off the event loop, outside the transaction
        limit = parts.config.dry_run_limit if dry_run_limit is None else dry_run_limit
        return await dry_run(parts, pool, spec, plan, now, limit, selected)
    planned = await size_before_create(pool, plan, spec.dag_id, parts.config.max_runs_per_backfill)
    wanted = None if spec.mode is Mode.EAGER else spec.max_active_runs + parts.config.lookahead
    # An eager create writes in lanes if it may and a place is free (taken before its first
    # batch, which is short when lanes follow it).
    in_lanes = wanted is None and lanes_apply(parts.tx, spec.reprocess_behavior) and parts.lanes.take()
    place = _Place(parts, in_lanes)
    try:
        created = await insert(
            parts,
            spec,
            timetable,
            planned,
            now,
            request_id,
            fingerprint,
            wanted,
            principal,
            pin,
            selected,
            in_lanes=in_lanes,
        )
        if created is None:  # a concurrent create with this request_id won the race
            assert request_id is not None
            previous = await by_request_id(parts, principal, request_id, fingerprint)
            assert previous is not None
            place.give_back()  # it joins in one batch at a time
            return await settled(parts, previous)
        backfill_id, first = created
        if first is not None and not first.exhausted:
            await _write_the_rest(parts, backfill_id, first, wanted, planned, now, place)
    finally:
        place.give_back()
    view = await get(parts, backfill_id, _CREATOR)
    if planned is None:  # started once the answer is read: its first read never delays the create's
        counter.ensure(backfill_id)
    return view


class _Place:
    """A create's place among the creates writing in lanes (:class:`LaneBudget`), given back once."""

    def __init__(self, parts: Parts, taken: bool) -> None:
        self._parts = parts
        self.taken = taken

    def give_back(self) -> None:
        if self.taken:
            self.taken = False
            self._parts.lanes.give_back()


async def _write_the_rest(
    parts: Parts,
    backfill_id: int,
    first: MaterializeResult,
    wanted: int | None,
    planned: int | None,
    now: dt.datetime,
    place: _Place,
) -> None:
    """After the create's own batch (``first``): the rest of the window, or of an eager plan
    (``planned`` slots, None: not counted yet).

    With a ``place`` taken: two batches at a time while they can be
    (:mod:`sidecar.engine._lanes`, starting from where ``first`` left the backfill), then
    one at a time to the end (the place given back first); the analysis of the tables the
    backfill grows is decided once for both, and done by the end (a table another session
    held meanwhile is tried once more).
    """
    made = first.runs_created
    statistics = await TableStatistics.start(
        parts.tx, None if wanted is None else wanted - made, most=planned
    )
    finished = False
    if place.taken and first.after is not None:
        lanes = await write_in_lanes(
            parts.tx,
            parts.catalog,
            first.after,
            batch_size=parts.config.batch_size,
            now=now,
            made_before=made,
            statistics=statistics,
            budget=parts.lanes,
        )
        made += lanes.made
        finished = lanes.finished  # every run committed: no batch left to write or wait for
        place.give_back()
    if not finished:
        made += await materialize(
            parts.tx,
            parts.catalog,
            backfill_id,
            runs_wanted=None if wanted is None else wanted - made,
            batch_size=parts.config.batch_size,
            now=now,
            wait=wanted is None,  # eager: answer once every run is committed, whoever wrote it
            made_before=made,
            statistics=statistics,
        )
    # The lanes' last batch (or a batch of another writer) may finish the writing before
    # the point is reached in a loop that checks it: an eager plan is analysed by the end.
    if wanted is None:
        await statistics.after(parts.tx, made)
    await statistics.retry_skipped(parts.tx, made)  # once; a table held again is left to autovacuum


async def insert(
    parts: Parts,
    spec: BackfillSpec,
    timetable: Mapping[str, Any],
    planned: int | None,
    now: dt.datetime,
    request_id: str | None,
    fingerprint: str,
    wanted: int | None,
    principal: str = "",
    pin: Pin | None = None,
    selected_task_ids: tuple[str, ...] = (),
    *,
    in_lanes: bool = False,
) -> tuple[int, MaterializeResult | None] | None:
    """Insert the backfill's rows and write its first batch, in one transaction.

    A first batch that fails rolls the backfill's own rows back with it: a refused or
    failed create leaves no row behind. Returns the id and what the first batch wrote
    (None when nothing was wanted), or None if ``principal``'s ``request_id`` is taken.
    ``pin``: the DAG version every run is written on (None: the latest at each batch).
    """
    new = NewBackfill(
        **spec_fields(spec),
        timetable=timetable,
        planned_count=planned,
        request_id=request_id,
        principal=principal,
        request_fingerprint=fingerprint,
        now=now,
        dag_version_id=pin.dag_version_id if pin else None,
        bundle_version=pin.bundle_version if pin else None,
        run_on_latest_version=pin.run_on_latest_version if pin else True,
        selected_task_ids=selected_task_ids,
    )
    first_runs = first_batch_size(parts, wanted, in_lanes=in_lanes)

    async def work(conn: AsyncConnection) -> tuple[int, MaterializeResult | None] | None:
        backfill_id = await insert_backfill(conn, new)
        if backfill_id is None:
            return None
        await register_backfill(conn, backfill_id, spec.webhook_url, spec.webhook_format, State.ACTIVE)
        if first_runs == 0:
            return backfill_id, None
        first = await materialize_batch(
            conn, parts.catalog, backfill_id, max_runs=first_runs, now=now, analyze=parts.tx.counted
        )
        return backfill_id, first

    started = time.perf_counter()
    created = await parts.tx.write(work)
    if created is not None and parts.tx.counted:  # not a rehearsal (serve's warm-up)
        backfill_id, first = created
        if first is not None:
            count_batch(first, started)
        log.info(
            "backfill %s created for DAG %s: %s (%s)",
            backfill_id,
            spec.dag_id,
            "slots being counted in the background"
            if planned is None
            else f"{counted(planned, 'slot')} planned",
            spec.mode.value,
        )
    return created


async def settled(parts: Parts, previous: BackfillView) -> BackfillView:
    """A retried create's answer: an eager backfill once every run is committed.

    The first call (or the tick, or another replica) may still be writing: the retry joins
    in, waiting for each batch another writer holds and writing the next, so it answers
    when the plan is written, as the first call does. A windowed backfill answers at once.
    """
    if previous.mode is not Mode.EAGER:
        return previous
    await materialize(
        parts.tx,
        parts.catalog,
        previous.id,
        runs_wanted=None,
        batch_size=parts.config.batch_size,
        now=parts.clock(),
        wait=True,
    )
    return await get(parts, previous.id, _CREATOR)


#: The runs of an eager create's own batch when lanes write the rest (:func:`first_batch_size`).
FIRST_BEFORE_LANES = 20


def first_batch_size(parts: Parts, wanted: int | None, *, in_lanes: bool = False) -> int:
    """How many runs the create's own transaction writes (the rest follow batch by batch).

    A whole batch (its runs' statistics are refreshed inside it when they matter to its
    foreign-key checks, ``materialize_batch``, so it need not stop short of an ANALYZE),
    except before an eager create's write lanes (``in_lanes``): nothing else writes while
    it does, so it is short (:data:`FIRST_BEFORE_LANES` runs: enough to prove the rows can
    be written) and the lanes start sooner.
    """
    size = parts.config.batch_size
    if wanted is not None:
        return max(0, min(size, wanted))
    return min(size, FIRST_BEFORE_LANES) if in_lanes else size


async def by_request_id(
    parts: Parts, principal: str, request_id: str, fingerprint: str
) -> BackfillView | None:
    """The backfill ``principal`` created with ``request_id``, if any (another's ids are not seen).

    Raises:
        InvalidArgument: the request id was used for a different request.
    """
    found = await parts.tx.read(lambda conn: find_request(conn, principal, request_id))
    if found is None:
        return None
    if found.fingerprint != fingerprint:
        raise InvalidArgument(
            f"request_id {request_id!r} was already used for a different request", field="request_id"
        )
    return await get(parts, found.backfill_id, _CREATOR)


def fingerprint_of(spec: BackfillSpec) -> str:
    """A digest of what the request asks for (not who asks), to tell a reused request id."""
    payload = asdict(spec)
    payload.pop("triggering_user_name")
    if payload["run_on_latest_version"] is None:  # as before the field existed
        payload.pop("run_on_latest_version")
    if payload["task_selection"] is None:  # fingerprints of requests without a subset stay as they were
        payload.pop("task_selection")
    for key in ("from_partition_key", "to_partition_key"):  # absent: the digest of older releases
        if payload[key] is None:
            del payload[key]
    return hashlib.sha256(json.dumps(payload, default=str, sort_keys=True).encode()).hexdigest()[:64]
