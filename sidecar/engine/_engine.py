"""``BackfillEngine``: creating, steering and ticking backfills."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._cancel import fail_runs
from sidecar.engine._counting import (
    MAX_RUNS_PER_BACKFILL,
    BackgroundCounter,
    in_daemon_thread,
    size_before_create,
)
from sidecar.engine._materialize import count_unfinished_runs, materialize
from sidecar.engine._model import (
    BackfillSpec,
    BackfillView,
    DryRun,
    Mode,
    Phase,
    Progress,
    SlotView,
    State,
    check_transition,
)
from sidecar.engine._plans import build_plan, check_dag, check_params, check_request_shape
from sidecar.engine._policies import SchedulerPolicies
from sidecar.engine._views import (
    backfill_query,
    backfill_stats,
    pending_slots,
    progress_of,
    state_filter,
    utcnow,
    view_of,
    written_slots,
)
from sidecar.errors import BackfillAlreadyRunning, BackfillNotFound, InvalidArgument
from sidecar.observability import TICK_SECONDS, log_context
from sidecar.store import DagCatalog, Database, decide, find_existing_runs
from sidecar.store._tables import backfill, sidecar_backfill

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of the materialiser."""

    batch_size: int = 1000
    """Slots written per transaction (fewer for wide DAGs: see ``materialize``'s task-instance
    budget). Chosen by measurement, docs/adr/0002-bulk-write-path.md."""
    lookahead: int = 2
    """Windowed mode keeps ``max_active_runs + lookahead`` runs queued or running."""
    dry_run_limit: int = 10_000
    """The most planned runs a dry run returns."""
    max_runs_per_backfill: int = MAX_RUNS_PER_BACKFILL
    """The most runs one backfill may plan; a larger range is refused before anything is written."""


@dataclass(frozen=True)
class TickResult:
    """What one tick did."""

    runs_written: int
    backfills_completed: int
    materializing: list[int]


class BackfillEngine:
    """Plans and writes backfills into Airflow's metadata database."""

    def __init__(
        self, db: Database, config: EngineConfig | None = None, *, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.db = db
        self.config = config or EngineConfig()
        self.catalog = DagCatalog()
        self._counter = BackgroundCounter(db)
        #: Cluster policies the schedulers' shims report (non-default mutation hooks refuse).
        self.policies = SchedulerPolicies()
        self._clock = clock
        self._tick_lock = asyncio.Lock()
        self._tick_task: asyncio.Task[TickResult] | None = None

    # ------------------------------------------------------------------ create

    async def create(
        self,
        spec: BackfillSpec,
        *,
        request_id: str | None = None,
        validate_only: bool = False,
        dry_run_limit: int | None = None,
    ) -> BackfillView | DryRun:
        """Validate, plan and create a backfill (or, with ``validate_only``, return its plan).

        Raises:
            SidecarError: a subclass for each failed check, in Airflow's order.
        """
        check_request_shape(spec)
        fingerprint = _fingerprint(spec)
        if request_id and not validate_only:
            previous = await self._by_request_id(request_id, fingerprint)
            if previous is not None:
                return previous
        now = self._clock()
        async with self.db.engine.connect() as conn:
            loaded = check_dag(spec, await self.catalog.load(conn, spec.dag_id))
            if not validate_only:
                self.policies.check()
            plan = build_plan(
                loaded.template.timetable, spec.dag_id, spec.from_date, spec.to_date, spec.run_backwards, now
            )
            if not validate_only:
                try:
                    await _check_no_active_backfill(conn, spec.dag_id)
                except BackfillAlreadyRunning:
                    # A concurrent create with the same request_id may have won the race.
                    if request_id and (previous := await self._by_request_id(request_id, fingerprint)):
                        return previous
                    raise
            check_params(spec, loaded, now)
            if validate_only:
                return await self._dry_run(conn, spec, plan, now, dry_run_limit or self.config.dry_run_limit)
        planned = await size_before_create(plan, spec.dag_id, self.config.max_runs_per_backfill)
        backfill_id = await self._insert_backfill(
            spec, loaded.template.timetable, planned, now, request_id, fingerprint
        )
        if backfill_id is None:  # a concurrent create with this request_id won the race
            assert request_id is not None
            previous = await self._by_request_id(request_id, fingerprint)
            assert previous is not None
            return previous
        wanted = None if spec.mode is Mode.EAGER else spec.max_active_runs + self.config.lookahead
        await materialize(
            self.db, self.catalog, backfill_id, runs_wanted=wanted, batch_size=self.config.batch_size, now=now
        )
        if planned is None:
            self._counter.ensure(backfill_id)
        return await self.get(backfill_id)

    async def _insert_backfill(
        self,
        spec: BackfillSpec,
        timetable: Any,
        planned: int | None,
        now: dt.datetime,
        request_id: str | None,
        fingerprint: str,
    ) -> int | None:
        """Insert the ``backfill`` and ``sidecar_backfill`` rows; None if ``request_id`` is taken."""
        async with self.db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Serialise concurrent creations for one DAG, then check again.
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                    {"k": f"airflow_sidecar.create:{spec.dag_id}"},
                )
            if request_id and await conn.scalar(
                sa.select(sidecar_backfill.c.backfill_id).where(sidecar_backfill.c.request_id == request_id)
            ):
                return None
            await _check_no_active_backfill(conn, spec.dag_id)
            backfill_id = (
                await conn.execute(
                    backfill.insert().returning(backfill.c.id),
                    {
                        "dag_id": spec.dag_id,
                        "from_date": spec.from_date,
                        "to_date": spec.to_date,
                        "dag_run_conf": spec.dag_run_conf,
                        "is_paused": False,
                        "reprocess_behavior": spec.reprocess_behavior.value,
                        "max_active_runs": spec.max_active_runs,
                        "created_at": now,
                        "updated_at": now,
                        "triggering_user_name": spec.triggering_user_name,
                    },
                )
            ).scalar_one()
            await conn.execute(
                sidecar_backfill.insert(),
                {
                    "backfill_id": backfill_id,
                    "dag_id": spec.dag_id,
                    "phase": Phase.MATERIALIZING.value,
                    "mode": spec.mode.value,
                    "run_backwards": spec.run_backwards,
                    "cutoff": now,
                    "timetable": timetable,
                    "dag_run_conf_given": spec.dag_run_conf is not None,
                    "planned_count": planned,
                    "written_count": 0,
                    "skipped_count": 0,
                    "cursor": None,
                    "request_id": request_id or None,
                    "request_fingerprint": fingerprint,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        log.info(
            "backfill %s created for DAG %s: %s slots planned (%s)",
            backfill_id,
            spec.dag_id,
            planned,
            spec.mode.value,
        )
        return int(backfill_id)

    async def _by_request_id(self, request_id: str, fingerprint: str) -> BackfillView | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sidecar_backfill.c.backfill_id, sidecar_backfill.c.request_fingerprint).where(
                        sidecar_backfill.c.request_id == request_id
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        if row.request_fingerprint != fingerprint:
            raise InvalidArgument(
                f"request_id {request_id!r} was already used for a different request", field="request_id"
            )
        return await self.get(row.backfill_id)

    async def _dry_run(
        self, conn: AsyncConnection, spec: BackfillSpec, plan: Any, now: dt.datetime, limit: int
    ) -> DryRun:
        runs = list(itertools.islice(plan.runs(), min(limit, self.config.dry_run_limit) + 1))
        truncated = len(runs) > limit
        runs = runs[:limit]
        existing = await find_existing_runs(conn, spec.dag_id, runs)
        slots = []
        for run in runs:
            found = existing.get(run.info.logical_date)
            disposition = decide(found, spec.reprocess_behavior.value)
            slots.append(
                SlotView(
                    sort_ordinal=run.sort_ordinal,
                    logical_date=run.info.logical_date,
                    data_interval_start=run.info.data_interval_start,
                    data_interval_end=run.info.data_interval_end,
                    run_after=run.info.run_after,
                    run_id=found.run_id if found else run.run_id,
                    disposition=disposition.value,
                    dag_run_id=found.id if found else None,
                    state=found.state if found else None,
                )
            )
        if truncated:
            limit = self.config.max_runs_per_backfill
            planned = await in_daemon_thread(lambda: plan.count_at_most(limit))
        else:
            planned = len(runs)
        view = BackfillView(
            id=0,
            dag_id=spec.dag_id,
            from_date=spec.from_date,
            to_date=spec.to_date,
            dag_run_conf=spec.dag_run_conf,
            reprocess_behavior=spec.reprocess_behavior.value,
            max_active_runs=spec.max_active_runs,
            run_backwards=spec.run_backwards,
            mode=spec.mode,
            is_paused=False,
            state=State.ACTIVE,
            progress=Progress(planned=planned),
            triggering_user_name=spec.triggering_user_name,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )
        return DryRun(backfill=view, runs=slots, truncated=truncated)

    # ------------------------------------------------------------------ read

    async def get(self, backfill_id: int) -> BackfillView:
        """One backfill with its live progress.

        Raises:
            BackfillNotFound.
        """
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(backfill_query().where(backfill.c.id == backfill_id))).one_or_none()
            if row is None:
                raise BackfillNotFound(f"Backfill {backfill_id} not found", field="name")
            progress = await progress_of(conn, [row])
        return view_of(row, progress[row.id])

    async def list_backfills(
        self, *, dag_id: str | None, state: State | None, page_size: int, before_id: int | None
    ) -> tuple[list[BackfillView], int | None]:
        """A page of backfills, newest first, and the id to continue before (None on the last page)."""
        query = backfill_query().order_by(backfill.c.id.desc()).limit(page_size + 1)
        if dag_id:
            query = query.where(backfill.c.dag_id == dag_id)
        if state is not None:
            query = query.where(state_filter(state))
        if before_id is not None:
            query = query.where(backfill.c.id < before_id)
        async with self.db.engine.connect() as conn:
            rows = list(await conn.execute(query))
            more = len(rows) > page_size
            rows = rows[:page_size]
            progress = await progress_of(conn, rows)
        return [view_of(r, progress[r.id]) for r in rows], (rows[-1].id if more else None)

    async def list_runs(
        self, backfill_id: int, *, page_size: int, after_ordinal: int
    ) -> tuple[list[SlotView], int | None]:
        """A page of a backfill's slots in plan order, written ones first, then pending ones."""
        await self.get(backfill_id)
        async with self.db.engine.connect() as conn:
            slots = await written_slots(conn, backfill_id, after_ordinal, page_size + 1)
            if len(slots) <= page_size:
                last = slots[-1].sort_ordinal if slots else after_ordinal
                slots += await pending_slots(conn, backfill_id, last, page_size + 1 - len(slots))
        more = len(slots) > page_size
        slots = slots[:page_size]
        return slots, (slots[-1].sort_ordinal if more else None)

    # ------------------------------------------------------------------ steer

    async def _ended(self, conn: AsyncConnection, backfill_id: int) -> tuple[bool, bool]:
        row = (
            await conn.execute(
                backfill_query().where(backfill.c.id == backfill_id).with_for_update(of=backfill)
            )
        ).one_or_none()
        if row is None:
            raise BackfillNotFound(f"Backfill {backfill_id} not found", field="name")
        state = view_of(row, Progress()).state
        return state is State.COMPLETED, state is State.CANCELLED

    async def set_paused(self, backfill_id: int, paused: bool) -> BackfillView:
        """Pause or unpause; idempotent.

        Raises:
            BackfillNotFound, InvalidTransition: the backfill has ended.
        """
        async with self.db.engine.begin() as conn:
            completed, cancelled = await self._ended(conn, backfill_id)
            check_transition(
                backfill_id, "pause" if paused else "unpause", completed=completed, cancelled=cancelled
            )
            await conn.execute(
                backfill.update()
                .where(backfill.c.id == backfill_id, backfill.c.is_paused.is_not(paused))
                .values(is_paused=paused, updated_at=self._clock())
            )
        return await self.get(backfill_id)

    async def cancel(self, backfill_id: int, *, terminate_running: bool = False) -> BackfillView:
        """Stop creating runs, fail the queued ones (with their task instances), complete the backfill.

        Running runs finish unless ``terminate_running`` is set: then they are failed the
        way Airflow's "mark failed" does (running task instances fail, unfinished ones are
        skipped). Unlike Airflow, the backfill is not left paused, so a run of it cleared
        later is not stranded. One transaction: a cancel is all or nothing.

        Raises:
            BackfillNotFound, InvalidTransition: the backfill has ended.
        """
        now = self._clock()
        async with self.db.engine.begin() as conn:
            # Lock order as the materialiser's (its own row, then Airflow's ``backfill``):
            # waits for a batch in flight instead of deadlocking with it.
            await conn.execute(
                sa.select(sidecar_backfill.c.backfill_id)
                .where(sidecar_backfill.c.backfill_id == backfill_id)
                .with_for_update()
            )
            completed, cancelled = await self._ended(conn, backfill_id)
            check_transition(backfill_id, "cancel", completed=completed, cancelled=cancelled)
            # The materialiser claims this row before each batch: once this commits no
            # batch can start, and one in flight holds the row lock until it commits.
            await conn.execute(
                sidecar_backfill.update()
                .where(sidecar_backfill.c.backfill_id == backfill_id)
                .values(phase=Phase.CANCELLED.value, updated_at=now)
            )
            dag_id = (
                await conn.execute(sa.select(backfill.c.dag_id).where(backfill.c.id == backfill_id))
            ).scalar_one()
            states = ("queued", "running") if terminate_running else ("queued",)
            stopped = await fail_runs(conn, backfill_id, dag_id, states, now)
            await conn.execute(
                backfill.update()
                .where(backfill.c.id == backfill_id)
                .values(completed_at=now, updated_at=now, is_paused=False)
            )
        log.info("backfill %s cancelled: %s runs failed (%s)", backfill_id, stopped, "/".join(states))
        return await self.get(backfill_id)

    # ------------------------------------------------------------------ operations

    async def close(self) -> None:
        """Stop background work (plan counts); a restart resumes it."""
        await self._counter.cancel_all()

    async def database_ready(self) -> bool:
        """Whether the metadata database answers (the readiness probe)."""
        async with self.db.engine.connect() as conn:
            return bool(await conn.scalar(sa.select(1)) == 1)

    async def stats(self) -> tuple[dict[str, int], list[tuple[int, str, int]]]:
        """Backfills by state and queued runs per open backfill, for metrics."""
        async with self.db.engine.connect() as conn:
            return await backfill_stats(conn)

    # ------------------------------------------------------------------ tick

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
                return await self._tick_locked()

    async def _tick_locked(self) -> TickResult:
        now = self._clock()
        async with self.db.engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(
                        sidecar_backfill.c.backfill_id,
                        sidecar_backfill.c.phase,
                        sidecar_backfill.c.mode,
                        sidecar_backfill.c.planned_count,
                        backfill.c.dag_id,
                        backfill.c.max_active_runs,
                        backfill.c.completed_at,
                    )
                    .join(backfill, backfill.c.id == sidecar_backfill.c.backfill_id)
                    .where(
                        sidecar_backfill.c.phase.in_((Phase.MATERIALIZING.value, Phase.MATERIALIZED.value))
                    )
                    .order_by(sidecar_backfill.c.backfill_id)
                )
            )
        written = completed = 0
        materializing: list[int] = []
        # A scheduler reports a mutation hook: write no new runs until it is gone.
        hooks = self.policies.active_hooks()
        if hooks:
            log.warning("not writing backfill runs: task_instance_mutation_hook reported: %s", hooks)
        for row in rows:
            with log_context(backfill_id=row.backfill_id, dag_id=row.dag_id):
                if row.phase == Phase.MATERIALIZING.value:
                    if row.planned_count is None:
                        self._counter.ensure(row.backfill_id)  # counting was cut short: resume it
                    if not hooks:
                        written += await self._top_up(row, now)
                    materializing.append(row.backfill_id)
                elif await self._complete_if_done(row.backfill_id, now):
                    completed += 1
        return TickResult(written, completed, materializing)

    async def _top_up(self, row: Any, now: dt.datetime) -> int:
        if row.completed_at is not None:
            # Airflow's completion timer closed it while runs remain to be written: reopen it.
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    backfill.update().where(backfill.c.id == row.backfill_id).values(completed_at=None)
                )
            log.warning("backfill %s was completed early by Airflow's timer; reopened", row.backfill_id)
        if row.mode == Mode.EAGER.value:
            wanted = None  # an eager backfill interrupted mid-way: finish it
        else:
            async with self.db.engine.connect() as conn:
                unfinished = await count_unfinished_runs(conn, row.backfill_id)
            wanted = row.max_active_runs + self.config.lookahead - unfinished
            if wanted <= 0:
                return 0
        return await materialize(
            self.db,
            self.catalog,
            row.backfill_id,
            runs_wanted=wanted,
            batch_size=self.config.batch_size,
            now=now,
        )

    async def _complete_if_done(self, backfill_id: int, now: dt.datetime) -> bool:
        async with self.db.engine.begin() as conn:
            if await count_unfinished_runs(conn, backfill_id):
                return False
            await conn.execute(
                backfill.update()
                .where(backfill.c.id == backfill_id, backfill.c.completed_at.is_(None))
                .values(completed_at=now, updated_at=now)
            )
            await conn.execute(
                sidecar_backfill.update()
                .where(
                    sidecar_backfill.c.backfill_id == backfill_id,
                    sidecar_backfill.c.phase == Phase.MATERIALIZED.value,
                )
                .values(phase=Phase.COMPLETED.value, updated_at=now)
            )
        log.info("backfill %s completed", backfill_id)
        return True


async def _check_no_active_backfill(conn: AsyncConnection, dag_id: str) -> None:
    active = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(backfill)
        .where(backfill.c.dag_id == dag_id, backfill.c.completed_at.is_(None))
    )
    if active:
        raise BackfillAlreadyRunning(
            f"Another backfill is running for Dag {dag_id}. There can be only one running backfill per Dag.",
            field="backfill.dag_id",
        )


def _fingerprint(spec: BackfillSpec) -> str:
    payload = asdict(spec)
    payload.pop("triggering_user_name")
    return hashlib.sha256(json.dumps(payload, default=str, sort_keys=True).encode()).hexdigest()[:64]
