"""The ledger: the one owner of the sidecar's own rows and of a backfill's lifecycle columns.

It writes ``sidecar_backfill`` (plan, cursor, counters, phase) and the lifecycle
columns of Airflow's ``backfill`` row (``is_paused``, ``completed_at``, ``updated_at``);
nothing else in the sidecar does (a new backfill's rows: :mod:`sidecar.store._creation`;
reads: :mod:`sidecar.store._backfill_reads`). Every change of phase goes through
:func:`sidecar.store._phases.transition`. Each function runs inside the caller's
transaction (see :class:`sidecar.store.Transactions`), re-reading and re-checking
what it changes there, so that a retried transaction is safe.

Lock order, everywhere: the sidecar's own row, then Airflow's ``backfill`` row. The
materialiser claims its row ``FOR UPDATE SKIP LOCKED`` (replicas never write the same
batch); a cancel waits for a batch in flight instead of deadlocking with it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.auth import Access
from sidecar.store._backfill_reads import BackfillRecord, PlanRecord, get_backfill, load_backfill, plan_query
from sidecar.store._phases import (
    PENDING_RUNS,
    TICKED,
    TRANSITIONS,
    AirflowClosing,
    Event,
    Phase,
    airflow_closing,
    transition,
)
from sidecar.store._runs import count_failed_runs, fail_runs, has_unfinished_runs, plan_for_first_rows
from sidecar.store._tables import backfill, sidecar_backfill
from sidecar.vocabulary import Mode, counted

__all__ = [
    "TickEntry",
    "advance_cursor",
    "cancel_backfill",
    "cancel_cancelled_by_airflow",
    "claim_batch",
    "complete_if_done",
    "finish_writing",
    "forgive_failed_runs",
    "lock_writers",
    "pause_for_failed_runs",
    "record_planned_count",
    "record_write_failure",
    "reopen_backfill",
    "set_paused",
    "tick_entries",
]


#: ``pg_advisory_xact_lock(key, backfill_id)``'s first key: who writes a backfill's batches.
_WRITERS_KEY = 0x51DEBA7C


async def lock_writers(conn: AsyncConnection, backfill_id: int, *, shared: bool, wait: bool) -> bool:
    """Take the backfill's writers' lock for the caller's transaction; False if ``wait`` is off and it is held.

    An eager create writes its batches in two lanes (``sidecar.engine._lanes``): each
    lane's batch writes its rows first and claims the backfill last, so it holds this lock
    *shared* from its first row to its commit. Every other batch (the tick, a replica, a
    retried create) takes it *exclusive* before its claim: the tick skips a backfill whose
    lanes are writing (``wait`` off) instead of writing the slots a lane is writing, and a
    waiting writer queues behind the lanes' batches in flight (PostgreSQL grants a lock in
    the order it was asked for, so the lanes' next batches queue behind it in turn).
    Always this lock first, then the claim: no cycle. Cancels and pauses never take it.
    On SQLite (one writer at a time) there is nothing to take.
    """
    if conn.dialect.name != "postgresql":
        return True
    function = {
        (True, True): "pg_advisory_xact_lock_shared",
        (True, False): "pg_try_advisory_xact_lock_shared",
        (False, True): "pg_advisory_xact_lock",
        (False, False): "pg_try_advisory_xact_lock",
    }[(shared, wait)]
    taken = await conn.scalar(
        sa.select(getattr(sa.func, function)(sa.literal(_WRITERS_KEY), sa.literal(backfill_id)))
    )
    return wait or bool(taken)


async def claim_batch(
    conn: AsyncConnection, backfill_id: int, *, unpaused: bool = False, wait: bool = False
) -> PlanRecord | None:
    """Claim a materialising backfill for one batch; None if it is not materialising or held.

    With ``unpaused`` (the tick), a paused backfill is not claimed either: a pause, from
    the sidecar or from Airflow, stops writing at the next batch. On PostgreSQL the sidecar
    row stays locked (``FOR UPDATE SKIP LOCKED``) until the caller's transaction ends, so
    no other replica writes the same batch. With ``wait`` (an eager create) a batch held
    by another writer is waited for instead of skipped: the claim then sees the phase that
    batch committed, so None means "not materialising" only, never "held".
    """
    query = plan_query(backfill_id).where(sidecar_backfill.c.phase == Phase.MATERIALIZING.value)
    if unpaused:
        query = query.where(backfill.c.is_paused.is_not(True))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=sidecar_backfill, skip_locked=not wait)
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else PlanRecord.of(row)


async def _set_phase(
    conn: AsyncConnection, backfill_id: int, current: Phase, event: Event, now: dt.datetime
) -> None:
    """Move the sidecar row (if any: Airflow's backfills have none) to the phase after ``event``."""
    after = transition(backfill_id, current, event)
    await conn.execute(
        sidecar_backfill.update()
        .where(sidecar_backfill.c.backfill_id == backfill_id)
        .values(phase=after.value, updated_at=now)
    )


async def advance_cursor(
    conn: AsyncConnection,
    claimed: PlanRecord,
    *,
    written: int,
    skipped: int,
    cursor: dict[str, Any] | None,
    exhausted: bool,
    now: dt.datetime,
) -> None:
    """After a batch of a claimed backfill: move the cursor and counters; finish writing if exhausted."""
    values: dict[str, Any] = {
        "written_count": sidecar_backfill.c.written_count + written,
        "skipped_count": sidecar_backfill.c.skipped_count + skipped,
        "updated_at": now,
        **_NO_FAILURE,  # a batch that commits ends a run of failures
    }
    if cursor is not None:
        values["cursor"] = cursor
    if exhausted:
        values["phase"] = transition(claimed.backfill_id, claimed.phase, Event.FINISH_WRITING).value
        values["planned_count"] = sa.func.coalesce(
            sidecar_backfill.c.planned_count, sidecar_backfill.c.written_count + written
        )
    await conn.execute(
        sidecar_backfill.update()
        .where(sidecar_backfill.c.backfill_id == claimed.backfill_id)
        .values(**values)
    )


#: The ``failure_*`` columns of a backfill whose writing succeeds.
_NO_FAILURE: dict[str, Any] = {
    "failure_reason": None,
    "failure_message": None,
    "failure_attempts": None,
    "failed_at": None,
}


async def record_write_failure(
    conn: AsyncConnection,
    backfill_id: int,
    *,
    reason: str,
    message: str,
    set_aside: bool,
    now: dt.datetime,
) -> int:
    """Record that writing a backfill's runs failed; with ``set_aside``, set it aside too.

    A transient failure keeps the phase (the next tick tries again); any other sets a
    materialising backfill aside. Either way the reason, a caller-safe sentence, the
    count of failed ticks in a row and the time are stored. Returns that count (0: the
    backfill is no longer materialising, e.g. cancelled meanwhile, and nothing was recorded).
    """
    record = await _lock(conn, backfill_id)
    if record.phase not in (Phase.MATERIALIZING, Phase.SET_ASIDE):
        return 0
    values: dict[str, Any] = {
        "failure_reason": reason[:40],
        "failure_message": message[:500],
        "failure_attempts": sa.func.coalesce(sidecar_backfill.c.failure_attempts, 0) + 1,
        "failed_at": now,
        "updated_at": now,
    }
    if set_aside:
        values["phase"] = transition(backfill_id, record.phase, Event.SET_ASIDE).value
    attempts = await conn.scalar(
        sidecar_backfill.update()
        .where(sidecar_backfill.c.backfill_id == backfill_id)
        .values(**values)
        .returning(sidecar_backfill.c.failure_attempts)
    )
    return int(attempts or 0)


async def finish_writing(conn: AsyncConnection, claimed: PlanRecord, now: dt.datetime) -> None:
    """Write no more runs of a claimed backfill (its DAG is gone)."""
    await _set_phase(conn, claimed.backfill_id, claimed.phase, Event.FINISH_WRITING, now)


async def record_planned_count(conn: AsyncConnection, backfill_id: int, planned: int) -> None:
    """Record a plan's size counted after creation (unless already known, or its writing ended).

    A backfill cancelled, or whose DAG went away, before its count landed keeps the slots it
    wrote as its plan: a count finishing later would promise runs it will never write.
    """
    await conn.execute(
        sidecar_backfill.update()
        .where(
            sidecar_backfill.c.backfill_id == backfill_id,
            sidecar_backfill.c.planned_count.is_(None),
            sidecar_backfill.c.phase.in_([phase.value for phase in PENDING_RUNS]),
        )
        .values(planned_count=planned)
    )


@dataclass(frozen=True, slots=True)
class TickEntry:
    """A backfill the tick visits: write its next runs, or complete it."""

    backfill_id: int
    dag_id: str
    phase: Phase
    """The stored phase (one of :data:`TICKED`)."""
    mode: Mode
    planned_count: int | None
    max_active_runs: int
    completed_at: dt.datetime | None
    is_paused: bool
    max_failed_runs: int | None = None
    """Pause it once this many of its runs failed (beyond those forgiven); None: never."""
    pause_reason: str | None = None
    """Why the sidecar paused it; set while ``is_paused`` is false: Airflow unpaused it."""
    failed_runs_forgiven: int = 0
    """Failed runs an unpause forgave (they do not count towards ``max_failed_runs``)."""

    @property
    def closing(self) -> AirflowClosing | None:
        """What Airflow's ``completed_at`` on it means (:func:`~sidecar.store._phases.airflow_closing`)."""
        return airflow_closing(self.phase, self.completed_at, self.is_paused)


_TICK_ENTRIES = (
    sa.select(
        sidecar_backfill.c.backfill_id,
        sidecar_backfill.c.phase,
        sidecar_backfill.c.mode,
        sidecar_backfill.c.planned_count,
        backfill.c.dag_id,
        backfill.c.max_active_runs,
        backfill.c.completed_at,
        backfill.c.is_paused,
        sidecar_backfill.c.max_failed_runs,
        sidecar_backfill.c.pause_reason,
        sidecar_backfill.c.failed_runs_forgiven,
    )
    .join(backfill, backfill.c.id == sidecar_backfill.c.backfill_id)
    .where(sidecar_backfill.c.phase.in_([p.value for p in TICKED]))
    .order_by(sidecar_backfill.c.backfill_id)
)


async def tick_entries(conn: AsyncConnection) -> list[TickEntry]:
    """The backfills in a ticked phase, oldest first (a statement built once: asked every loop)."""
    rows = await conn.execute(_TICK_ENTRIES)
    return [
        TickEntry(
            r.backfill_id,
            r.dag_id,
            Phase(r.phase),
            Mode(r.mode),
            r.planned_count,
            r.max_active_runs,
            r.completed_at,
            bool(r.is_paused),
            r.max_failed_runs,
            r.pause_reason,
            int(r.failed_runs_forgiven or 0),
        )
        for r in rows
    ]


async def reopen_backfill(conn: AsyncConnection, backfill_id: int) -> None:
    """Undo Airflow's completion of a backfill that still has runs to write (its timer's doing)."""
    await conn.execute(backfill.update().where(backfill.c.id == backfill_id).values(completed_at=None))


async def _lock(conn: AsyncConnection, backfill_id: int, access: Access | None = None) -> BackfillRecord:
    """Lock a backfill's rows in the ledger's order (its own row, then Airflow's) and read it.

    With ``access`` (a caller's call), the locked row is authorised before anything changes.
    """
    await conn.execute(
        sa.select(sidecar_backfill.c.backfill_id)
        .where(sidecar_backfill.c.backfill_id == backfill_id)
        .with_for_update()
    )
    if access is None:
        return await get_backfill(conn, backfill_id, for_update=True)
    return await load_backfill(conn, backfill_id, access, for_update=True)


async def set_paused(
    conn: AsyncConnection, backfill_id: int, paused: bool, now: dt.datetime, access: Access
) -> None:
    """Pause or unpause; idempotent. Unpausing a set-aside backfill resumes writing it.

    The locked row is authorised for ``access`` before anything changes.

    Raises:
        BackfillNotFound: none, or of a DAG the caller may not read.
        PermissionDenied: the caller may read the DAG but not pause it.
        InvalidTransition: the backfill has ended.
    """
    record = await _lock(conn, backfill_id, access)
    after = transition(backfill_id, record.phase, Event.PAUSE if paused else Event.UNPAUSE)
    if after is not record.phase:  # set aside -> materializing: try again from a clean slate
        await conn.execute(
            sidecar_backfill.update()
            .where(sidecar_backfill.c.backfill_id == backfill_id)
            .values(phase=after.value, updated_at=now, **_NO_FAILURE)
        )
    await conn.execute(
        backfill.update()
        .where(backfill.c.id == backfill_id, backfill.c.is_paused.is_not(paused))
        .values(is_paused=paused, updated_at=now)
    )
    if not paused and record.pause_reason is not None:
        await forgive_failed_runs(conn, backfill_id, now)


async def pause_for_failed_runs(conn: AsyncConnection, backfill_id: int, now: dt.datetime) -> str | None:
    """Pause a backfill whose failed runs reached its ``max_failed_runs``; the reason, or None if not.

    Re-read under the ledger's lock: a backfill paused, ended or forgiven meanwhile is left
    alone. The reason is stored (``pause_reason``) and Airflow's row is paused, so Airflow's
    scheduler starts none of its queued runs (its running runs go on).
    """
    record = await _lock(conn, backfill_id)
    limit = record.controls.max_failed_runs
    if limit is None or record.is_paused or Event.PAUSE_FOR_FAILED_RUNS not in TRANSITIONS[record.phase]:
        return None
    forgiven = record.failed_runs_forgiven
    failed = await count_failed_runs(conn, backfill_id, at_most=forgiven + limit) - forgiven
    if failed < limit:
        return None
    after = transition(backfill_id, record.phase, Event.PAUSE_FOR_FAILED_RUNS)
    reason = f"{counted(failed, 'failed run')} reached max_failed_runs {limit}"
    await conn.execute(
        sidecar_backfill.update()
        .where(sidecar_backfill.c.backfill_id == backfill_id)
        .values(phase=after.value, pause_reason=reason, updated_at=now)
    )
    await conn.execute(
        backfill.update().where(backfill.c.id == backfill_id).values(is_paused=True, updated_at=now)
    )
    return reason


async def forgive_failed_runs(conn: AsyncConnection, backfill_id: int, now: dt.datetime) -> None:
    """After an unpause (the sidecar's, or Airflow's own): the runs failed so far no longer count.

    The reason goes, and the backfill goes on until ``max_failed_runs`` more of its runs fail.
    """
    failed = await count_failed_runs(conn, backfill_id)
    await conn.execute(
        sidecar_backfill.update()
        .where(sidecar_backfill.c.backfill_id == backfill_id)
        .values(failed_runs_forgiven=failed, pause_reason=None, updated_at=now)
    )


async def cancel_backfill(
    conn: AsyncConnection, backfill_id: int, run_states: tuple[str, ...], now: dt.datetime, access: Access
) -> int:
    """Cancel: no batch starts after this commits; fail the runs in ``run_states``; end the backfill.

    Unlike Airflow, the backfill is not left paused, so a run of it cleared later is not
    stranded. The locked row is authorised for ``access`` first. Returns the number of
    runs failed.

    Raises:
        BackfillNotFound: none, or of a DAG the caller may not read.
        PermissionDenied: the caller may read the DAG but not cancel it.
        InvalidTransition: the backfill has ended.
    """
    record = await _lock(conn, backfill_id, access)
    return await _cancel(conn, record, run_states, now, completed_at=now)


async def cancel_cancelled_by_airflow(
    conn: AsyncConnection, backfill_id: int, now: dt.datetime
) -> int | None:
    """Cancel a backfill Airflow's own cancel closed while it had runs to write; None if it was not.

    Airflow paused it, failed its queued runs (no end date, task instances without a
    state) and set ``completed_at``. This ends it exactly as the sidecar's cancel does: the
    phase cancelled, queued runs (written meanwhile) and the runs Airflow failed ended with
    an end date and their task instances skipped, the backfill unpaused (so a run cleared
    later is not stranded) with Airflow's ``completed_at`` kept. Returns the number of runs
    ended.
    """
    record = await _lock(conn, backfill_id)
    if record.stored_phase is None:
        return None
    if (
        airflow_closing(record.stored_phase, record.completed_at, record.is_paused)
        is not AirflowClosing.CANCELLED
    ):
        return None  # unpaused or reopened meanwhile
    return await _cancel(
        conn, record, ("queued",), now, completed_at=record.completed_at, failed_unended=True
    )


async def _cancel(
    conn: AsyncConnection,
    record: BackfillRecord,
    run_states: tuple[str, ...],
    now: dt.datetime,
    *,
    completed_at: dt.datetime | None,
    failed_unended: bool = False,
) -> int:
    """Cancel a locked backfill: phase, runs, and Airflow's row (see :func:`cancel_backfill`)."""
    # The materialiser claims the sidecar row before each batch: once this commits no
    # batch can start, and one in flight holds the row lock until it commits.
    await _set_phase(conn, record.id, record.phase, Event.CANCEL, now)
    stopped = await fail_runs(conn, record.id, record.dag_id, run_states, now, failed_unended=failed_unended)
    await conn.execute(
        backfill.update()
        .where(backfill.c.id == record.id)
        .values(completed_at=completed_at, updated_at=now, is_paused=False)
    )
    return stopped


async def complete_if_done(conn: AsyncConnection, backfill_id: int, now: dt.datetime) -> bool:
    """Complete a fully written backfill whose runs have all finished; False if not (yet)."""
    await plan_for_first_rows(conn)
    if await has_unfinished_runs(conn, backfill_id):
        return False
    record = await _lock(conn, backfill_id)
    if Event.COMPLETE not in TRANSITIONS[record.phase]:  # cancelled meanwhile
        return False
    await _set_phase(conn, backfill_id, record.phase, Event.COMPLETE, now)
    await conn.execute(
        backfill.update()
        .where(backfill.c.id == backfill_id, backfill.c.completed_at.is_(None))
        .values(completed_at=now, updated_at=now)
    )
    return True
