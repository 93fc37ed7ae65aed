"""Reading backfills back as typed records: Airflow's ``backfill`` row with the sidecar's own.

A backfill Airflow made has no ``sidecar_backfill`` row: its sidecar columns read as
None, and its phase is derived from Airflow's columns alone (:func:`lifecycle_of`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.auth import Access
from sidecar.catalog import TaskSelection
from sidecar.errors import BackfillNotFound
from sidecar.planning import with_offset
from sidecar.store._controls import CONTROL_READ_COLUMNS, Controls
from sidecar.store._phases import Phase, WriteFailure, lifecycle_of, state_filter, state_of
from sidecar.store._tables import OFFSET_COLUMNS, backfill, dag_run, sidecar_backfill, sidecar_task_selection
from sidecar.vocabulary import Mode, ReprocessBehavior, State

__all__ = [
    "BackfillRecord",
    "PlanRecord",
    "backfill_stats",
    "get_backfill",
    "glob_like",
    "list_backfills",
    "load_backfill",
    "plan_record",
]


def _reprocess(value: str | None) -> ReprocessBehavior | None:
    try:
        return ReprocessBehavior(value)
    except ValueError:  # a value this release of the sidecar does not know
        return None


def _conf(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _uuid(value: object) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


@dataclass(frozen=True, slots=True)
class BackfillRecord:
    """One backfill as stored."""

    id: int
    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    dag_run_conf: dict[str, Any] | None
    reprocess_behavior: ReprocessBehavior | None
    max_active_runs: int
    is_paused: bool
    triggering_user_name: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None
    stored_phase: Phase | None
    """``sidecar_backfill.phase``; None for a backfill Airflow made."""
    mode: Mode | None
    run_backwards: bool
    planned_count: int | None
    written_count: int | None
    skipped_count: int | None
    write_failure: WriteFailure | None
    """Why its last batch failed (None while writing succeeds, and for a backfill Airflow made)."""
    run_on_latest_version: bool | None = None
    """How its reprocessed runs are cleared (None: a backfill Airflow made, or one made before pinning)."""
    bundle_version: str | None = None
    """The bundle version its runs are pinned to (None: unversioned, or not the sidecar's)."""
    task_selection: TaskSelection | None = None
    """Its task subset (None: every task runs)."""
    selected_task_ids: tuple[str, ...] = ()
    """The task ids the subset resolved to (empty without one)."""
    controls: Controls = field(default_factory=Controls)
    """Its controls beyond Airflow's columns (the defaults for a backfill Airflow made)."""
    pause_reason: str | None = None
    """Why the sidecar paused it (its failed runs reached ``max_failed_runs``); None otherwise."""
    failed_runs_forgiven: int = 0
    """Failed runs an unpause forgave: they no longer count towards ``max_failed_runs``."""

    @property
    def phase(self) -> Phase:
        """The backfill's phase, Airflow's ``completed_at`` folded in."""
        return lifecycle_of(self.stored_phase, self.completed_at)

    @property
    def state(self) -> State:
        """The state a caller sees."""
        return state_of(self.phase, self.is_paused)

    @classmethod
    def of(cls, row: Any) -> BackfillRecord:
        """The record of a :func:`backfill_query` row."""
        return cls(
            id=row.id,
            dag_id=row.dag_id,
            from_date=with_offset(row.from_date, row.from_utc_offset or 0),
            to_date=with_offset(row.to_date, row.to_utc_offset or 0),
            dag_run_conf=_conf(row.dag_run_conf),
            reprocess_behavior=_reprocess(row.reprocess_behavior),
            max_active_runs=row.max_active_runs,
            is_paused=bool(row.is_paused),
            triggering_user_name=row.triggering_user_name,
            created_at=row.created_at,
            updated_at=row.updated_at,
            completed_at=row.completed_at,
            stored_phase=Phase(row.phase) if row.phase else None,
            mode=Mode(row.mode) if row.mode else None,
            run_backwards=bool(row.run_backwards),
            planned_count=row.planned_count,
            written_count=row.written_count,
            skipped_count=row.skipped_count,
            write_failure=WriteFailure.of(row, Phase(row.phase)) if row.phase else None,
            run_on_latest_version=row.run_on_latest_version,
            bundle_version=row.bundle_version,
            task_selection=selection_of(row),
            selected_task_ids=tuple(row.selected_task_ids or ()),
            controls=Controls.of(row),
            pause_reason=row.pause_reason,
            failed_runs_forgiven=int(row.failed_runs_forgiven or 0),
        )


_COLUMNS = (
    backfill,
    sidecar_backfill.c.phase,
    sidecar_backfill.c.mode,
    sidecar_backfill.c.run_backwards,
    sidecar_backfill.c.planned_count,
    sidecar_backfill.c.written_count,
    sidecar_backfill.c.skipped_count,
    sidecar_backfill.c.failure_reason,
    sidecar_backfill.c.failure_message,
    sidecar_backfill.c.failure_attempts,
    sidecar_backfill.c.failed_at,
    sidecar_backfill.c.run_on_latest_version,
    sidecar_backfill.c.bundle_version,
    sidecar_task_selection.c.task_regex,
    sidecar_task_selection.c.task_ids,
    sidecar_task_selection.c.include_upstream,
    sidecar_task_selection.c.include_downstream,
    sidecar_task_selection.c.selected_task_ids,
    *CONTROL_READ_COLUMNS,
    sidecar_backfill.c.failed_runs_forgiven,
    *OFFSET_COLUMNS,
)


def selection_of(row: Any) -> TaskSelection | None:
    """The task subset of a row joined with ``sidecar_task_selection`` (None without one)."""
    if row.selected_task_ids is None:
        return None
    return TaskSelection(
        task_regex=row.task_regex,
        task_ids=tuple(row.task_ids or ()),
        include_upstream=bool(row.include_upstream),
        include_downstream=bool(row.include_downstream),
    )


def backfill_query() -> sa.Select[Any]:
    """Airflow's backfill rows with the sidecar's own columns (NULL for backfills Airflow made)."""
    return sa.select(*_COLUMNS).select_from(
        backfill.outerjoin(sidecar_backfill, sidecar_backfill.c.backfill_id == backfill.c.id).outerjoin(
            sidecar_task_selection, sidecar_task_selection.c.backfill_id == backfill.c.id
        )
    )


async def get_backfill(
    conn: AsyncConnection, backfill_id: int, *, for_update: bool = False
) -> BackfillRecord:
    """One backfill (with ``for_update``, its ``backfill`` row locked).

    The lock is ``FOR NO KEY UPDATE``: what an ``UPDATE`` of its columns takes anyway, so
    it excludes Airflow's writers (its API's updates, its scheduler's ``FOR UPDATE SKIP
    LOCKED``) as a ``FOR UPDATE`` would, but not the ``FOR KEY SHARE`` that the foreign
    keys of the rows a batch writes take: a pause or a cancel never waits for the write
    lanes' batches (``sidecar.engine._lanes``), which then find it at their claim.

    Raises:
        BackfillNotFound: field ``name``.
    """
    query = backfill_query().where(backfill.c.id == backfill_id)
    if for_update:
        query = query.with_for_update(of=backfill, key_share=True)
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise BackfillNotFound.of(backfill_id)
    return BackfillRecord.of(row)


async def load_backfill(
    conn: AsyncConnection, backfill_id: int, access: Access, *, for_update: bool = False
) -> BackfillRecord:
    """The backfill a caller's call acts on, authorised on the row loaded (the one place).

    Every call that names a backfill reads or locks its row here, in the transaction
    that then reads or changes it, so no other backfill can take its place between the
    decision and the act. With ``for_update`` the check runs after the lock.

    Raises:
        BackfillNotFound: none, or of a DAG the caller may not read (the same error).
        PermissionDenied: the caller may read the DAG but not do the call's action.
    """
    record = await get_backfill(conn, backfill_id, for_update=for_update)
    access.check(record.dag_id, backfill_id)
    return record


def _bracket_end(glob: str, start: int) -> int:
    """The index of the ``]`` closing the fnmatch set opened at ``start``, or -1 if none."""
    end = start + 1
    if end < len(glob) and glob[end] == "!":
        end += 1
    if end < len(glob) and glob[end] == "]":
        end += 1
    return glob.find("]", end)


def glob_like(glob: str) -> str:
    """A LIKE pattern (escape ``\\``) matching at least every DAG id the fnmatch ``glob`` does.

    ``*`` becomes ``%``; ``?`` and a ``[...]`` set become ``_`` (one character, any); the
    rest is literal. Exact on PostgreSQL except for sets; SQLite's LIKE also ignores ASCII
    case. Callers keep only the rows the policy itself accepts.
    """
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char == "[" and (end := _bracket_end(glob, i)) != -1:
            out.append("_")
            i = end
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
        i += 1
    return "".join(out)


async def list_backfills(
    conn: AsyncConnection,
    *,
    dag_id: str | None,
    state: State | None,
    limit: int,
    before_id: int | None,
    dag_globs: tuple[str, ...] | None = None,
) -> list[BackfillRecord]:
    """Up to ``limit`` backfills, newest first, optionally of one DAG, in one state, before an id.

    ``dag_globs`` (fnmatch) narrows to DAGs matching one of them, in SQL as a superset
    (:func:`glob_like`); None means every DAG.
    """
    query = backfill_query().order_by(backfill.c.id.desc()).limit(limit)
    if dag_id:
        query = query.where(backfill.c.dag_id == dag_id)
    if dag_globs is not None:
        query = query.where(
            sa.or_(sa.false(), *(backfill.c.dag_id.like(glob_like(g), escape="\\") for g in dag_globs))
        )
    if state is not None:
        query = query.where(state_filter(state))
    if before_id is not None:
        query = query.where(backfill.c.id < before_id)
    return [BackfillRecord.of(row) for row in await conn.execute(query)]


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A sidecar backfill's stored plan, cursor and what its runs are written with."""

    backfill_id: int
    dag_id: str
    phase: Phase
    mode: Mode
    run_backwards: bool
    cutoff: dt.datetime
    timetable: dict[str, Any]
    """The DAG's serialised timetable when the backfill was created (its plan is stable)."""
    from_date: dt.datetime
    to_date: dt.datetime
    planned_count: int | None
    written_count: int
    skipped_count: int
    cursor: dict[str, Any] | None
    """The last slot written, as stored (``None`` before the first batch)."""
    max_active_runs: int
    dag_run_conf: dict[str, Any] | None
    dag_run_conf_given: bool
    triggering_user_name: str | None
    reprocess_behavior: ReprocessBehavior
    dag_version_id: uuid.UUID | None = None
    """The DAG version its runs are written on (None: made before pinning, the latest then)."""
    bundle_version: str | None = None
    """The bundle version its new runs record (when ``dag_version_id`` is set)."""
    run_on_latest_version: bool = True
    """Reprocessed runs move to the pinned version (True) or are cleared on their own."""
    selected_task_ids: frozenset[str] | None = None
    """The only tasks its runs run (the others' task instances are ``removed``); None: all."""

    @classmethod
    def of(cls, row: Any) -> PlanRecord:
        """The record of a :func:`plan_query` row."""
        return cls(
            backfill_id=row.backfill_id,
            dag_id=row.dag_id,
            phase=Phase(row.phase),
            mode=Mode(row.mode),
            run_backwards=bool(row.run_backwards),
            cutoff=row.cutoff,
            timetable=row.timetable,
            from_date=with_offset(row.from_date, row.from_utc_offset or 0),
            to_date=with_offset(row.to_date, row.to_utc_offset or 0),
            planned_count=row.planned_count,
            written_count=int(row.written_count),
            skipped_count=int(row.skipped_count),
            cursor=row.cursor or None,
            max_active_runs=row.max_active_runs,
            dag_run_conf=_conf(row.dag_run_conf),
            dag_run_conf_given=bool(row.dag_run_conf_given),
            triggering_user_name=row.triggering_user_name,
            reprocess_behavior=_reprocess(row.reprocess_behavior) or ReprocessBehavior.NONE,
            dag_version_id=_uuid(row.dag_version_id),
            bundle_version=row.bundle_version,
            run_on_latest_version=row.run_on_latest_version is not False,
            selected_task_ids=None if row.selected_task_ids is None else frozenset(row.selected_task_ids),
        )


def plan_query(backfill_id: int) -> sa.Select[Any]:
    """The sidecar row of one backfill with the ``backfill`` columns its batches need."""
    return (
        sa.select(
            sidecar_backfill,
            backfill.c.max_active_runs,
            backfill.c.dag_run_conf,
            backfill.c.triggering_user_name,
            backfill.c.from_date,
            backfill.c.to_date,
            backfill.c.reprocess_behavior,
            sidecar_task_selection.c.selected_task_ids,
        )
        .join(backfill, backfill.c.id == sidecar_backfill.c.backfill_id)
        .outerjoin(
            sidecar_task_selection, sidecar_task_selection.c.backfill_id == sidecar_backfill.c.backfill_id
        )
        .where(sidecar_backfill.c.backfill_id == backfill_id)
    )


async def plan_record(conn: AsyncConnection, backfill_id: int) -> PlanRecord | None:
    """A sidecar backfill's stored plan; None for a backfill Airflow made (or none at all)."""
    row = (await conn.execute(plan_query(backfill_id))).one_or_none()
    return None if row is None else PlanRecord.of(row)


async def backfill_stats(conn: AsyncConnection) -> tuple[dict[str, int], list[tuple[int, str, int]]]:
    """Backfills by caller-facing state, and the queued runs of each open backfill (for metrics)."""
    counts: dict[str, int] = {}
    for state in State:
        value = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(
                backfill.outerjoin(sidecar_backfill, sidecar_backfill.c.backfill_id == backfill.c.id)
            )
            .where(state_filter(state))
        )
        counts[state.value] = int(value or 0)
    result = await conn.execute(_QUEUE_DEPTHS)
    return counts, [(int(i), str(d), int(n)) for i, d, n in result]


# Per open backfill, a count of its queued runs over the columns of the sidecar's index on
# ``dag_run (backfill_id, state)``: an index-only range scan of that backfill's queued entries,
# never its finished runs, other backfills' runs or the table's rows (``count(dag_run.id)``
# over a join read every queued row of every backfill from the heap). Without the index (a
# role that may not create it) each count reads what a tick's questions about that backfill
# read then.
_QUEUE_DEPTHS = sa.select(
    backfill.c.id,
    backfill.c.dag_id,
    sa.select(sa.func.count(dag_run.c.backfill_id))
    .where(dag_run.c.backfill_id == backfill.c.id, dag_run.c.state == "queued")
    .scalar_subquery(),
).where(backfill.c.completed_at.is_(None))
