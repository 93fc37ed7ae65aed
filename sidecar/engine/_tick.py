"""The tick: topping up every materialising backfill to its window, completing finished ones.

Airflow's controls are obeyed on the next tick and never reversed: a paused backfill gets
no new runs (an eager one interrupted mid-way waits too) until it is unpaused, and one
that Airflow's own cancel closed is cancelled by the ledger as the sidecar's cancel would
(:func:`sidecar.store.airflow_closing` tells Airflow's cancel from its completion timer).
A backfill whose failed runs reach its ``max_failed_runs`` is paused, with its reason, before
anything else is written for it (:func:`_stop_losses`). Each backfill is handled on its own: a failure of one is contained
(:mod:`sidecar.engine._containment`: retried next tick if transient, else set aside)
and the tick goes on with the others, so one backfill can never stop the rest.

A tick that changes nothing costs one read on one connection (:func:`_look`): the ticked
backfills and, for each, its failed runs up to its limit, its unfinished runs up to its
window (or whether any is left), each bounded by what is in flight, never by the size of
the backfill (issue 14, docs/adr/0009). Writes follow only where something changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._config import Parts
from sidecar.engine._containment import contain
from sidecar.engine._counting import BackgroundCounter
from sidecar.engine._materialize import materialize
from sidecar.engine._policies import SchedulerPolicies
from sidecar.observability import log_context
from sidecar.store import (
    AirflowClosing,
    Phase,
    TickEntry,
    cancel_cancelled_by_airflow,
    complete_if_done,
    count_failed_runs,
    count_unfinished_runs,
    forgive_failed_runs,
    has_unfinished_runs,
    pause_for_failed_runs,
    plan_for_first_rows,
    reopen_backfill,
    tick_entries,
)
from sidecar.vocabulary import Mode, counted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    """What one tick did."""

    runs_written: int
    backfills_completed: int
    materializing: list[int]


#: How long the tick's read of a window's unfinished runs is used before it is read again.
_FRESH_FOR = 1.0


@dataclass(frozen=True)
class _Seen:
    """What the tick's one read saw of a backfill (None: not asked; read when needed)."""

    failed: int | None = None
    """Its failed runs, counted up to its limit."""
    unfinished: int | None = None
    """Its unfinished runs, counted up to its window (a windowed backfill still writing)."""
    any_unfinished: bool | None = None
    """Whether any run is left (a backfill fully written)."""


def _failed_runs_limit(entry: TickEntry) -> int | None:
    """The failed runs at which the backfill is paused, if the tick must count them now."""
    if entry.max_failed_runs is None or entry.is_paused or entry.pause_reason is not None:
        return None
    return entry.failed_runs_forgiven + entry.max_failed_runs


def _window(parts: Parts, entry: TickEntry) -> int:
    return entry.max_active_runs + parts.config.lookahead


async def _look(parts: Parts, conn: AsyncConnection) -> tuple[list[TickEntry], dict[int, _Seen]]:
    """The ticked backfills and what each has in flight, on one connection (one round trip each)."""
    entries = await tick_entries(conn)
    seen: dict[int, _Seen] = {}
    if entries:
        await plan_for_first_rows(conn)
    for entry in entries:
        if entry.closing is AirflowClosing.CANCELLED or entry.phase is Phase.SET_ASIDE:
            continue
        limit = _failed_runs_limit(entry)
        failed = None if limit is None else await count_failed_runs(conn, entry.backfill_id, at_most=limit)
        if entry.phase is not Phase.MATERIALIZING:
            seen[entry.backfill_id] = _Seen(
                failed, any_unfinished=await has_unfinished_runs(conn, entry.backfill_id)
            )
        elif entry.mode is Mode.EAGER:
            seen[entry.backfill_id] = _Seen(failed)
        else:
            window = _window(parts, entry)
            unfinished = await count_unfinished_runs(conn, entry.backfill_id, at_most=window)
            seen[entry.backfill_id] = _Seen(failed, unfinished=unfinished)
    return entries, seen


async def tick(parts: Parts, policies: SchedulerPolicies, counter: BackgroundCounter) -> TickResult:
    """One pass over the backfills in a ticked phase (the caller serialises ticks)."""
    now = parts.clock()
    try:
        entries, seen = await parts.tx.read(lambda conn: _look(parts, conn))
    except Exception:  # each backfill is then read on its own below, its failure contained
        log.warning("the tick's combined read failed; reading each backfill on its own", exc_info=True)
        entries, seen = await parts.tx.read(tick_entries), {}
    counter.forget_all_but({entry.backfill_id for entry in entries if entry.planned_count is None})
    read_at = time.monotonic()
    written = completed = 0
    materializing: list[int] = []
    # A scheduler reports a mutation hook: write no new runs until it is gone.
    hooks = policies.active_hooks()
    policies.announce(hooks)  # logged when the reported set changes, not on every tick
    for entry in entries:
        with log_context(backfill_id=entry.backfill_id, dag_id=entry.dag_id):
            if entry.closing is AirflowClosing.CANCELLED:
                await _cancelled_by_airflow(parts, entry.backfill_id, now)
                continue
            if entry.phase is Phase.SET_ASIDE:
                # Runs remain to be written once it is resumed: hold Airflow's timer off it.
                materializing.append(entry.backfill_id)
                if entry.planned_count is None:  # its progress says "counting": keep that true
                    counter.ensure(entry.backfill_id)
                continue
            writing = entry.phase is Phase.MATERIALIZING
            try:
                look = seen.get(entry.backfill_id, _Seen())
                if await _stop_losses(parts, entry, now, look.failed):
                    entry = replace(entry, is_paused=True)
                if writing:
                    materializing.append(entry.backfill_id)
                    if entry.planned_count is None:
                        counter.ensure(entry.backfill_id)  # counting was cut short: resume it
                    if not hooks and not entry.is_paused:  # paused: no new runs until unpaused
                        # A window counted long ago (an eager backfill before it took a
                        # while) may be stale if another replica topped it up: count again.
                        fresh = time.monotonic() - read_at < _FRESH_FOR
                        written += await _top_up(parts, entry, now, look.unfinished if fresh else None)
                elif look.any_unfinished is not True and await _complete_if_done(
                    parts, entry.backfill_id, now
                ):
                    completed += 1
            except Exception as exc:  # contained: the other backfills are still written
                await contain(parts, entry.backfill_id, exc, now, writing=writing)
    return TickResult(written, completed, materializing)


async def _stop_losses(parts: Parts, entry: TickEntry, now: dt.datetime, failed: int | None) -> bool:
    """Pause a backfill whose failed runs reached its ``max_failed_runs``; True if it was paused now.

    A backfill the sidecar paused so and Airflow unpaused (its own control wins) has the
    runs failed so far forgiven, as the sidecar's own unpause does. ``failed``: the failed
    runs the tick's read counted (None: counted here).
    """
    if entry.max_failed_runs is None:
        return False
    if entry.pause_reason is not None and not entry.is_paused:
        await parts.tx.write(lambda conn: forgive_failed_runs(conn, entry.backfill_id, now))
        log.info(
            "backfill %s was unpaused by Airflow; its failed runs so far are forgiven", entry.backfill_id
        )
        return False
    limit = _failed_runs_limit(entry)
    if limit is None:  # paused: nothing to count
        return False
    # A bounded read first: the rows are locked only once the limit is reached.
    if failed is None:
        failed = await parts.tx.read(lambda conn: count_failed_runs(conn, entry.backfill_id, at_most=limit))
    if failed < limit:
        return False
    reason = await parts.tx.write(lambda conn: pause_for_failed_runs(conn, entry.backfill_id, now))
    if reason is None:
        return False
    log.warning("backfill %s %s", entry.backfill_id, reason)
    return True


async def _top_up(parts: Parts, entry: TickEntry, now: dt.datetime, unfinished: int | None) -> int:
    if entry.closing is AirflowClosing.CLOSED_EARLY:
        # Airflow's completion timer closed it while runs remain to be written: reopen it.
        await parts.tx.write(lambda conn: reopen_backfill(conn, entry.backfill_id))
        log.warning("backfill %s was completed early by Airflow's timer; reopened", entry.backfill_id)
    if entry.mode is Mode.EAGER:
        wanted = None  # an eager backfill interrupted mid-way: finish it
    else:
        window = _window(parts, entry)
        if unfinished is None:
            unfinished = await parts.tx.read(
                lambda conn: count_unfinished_runs(conn, entry.backfill_id, at_most=window)
            )
        wanted = window - unfinished
        if wanted <= 0:
            return 0
    return await materialize(
        parts.tx,
        parts.catalog,
        entry.backfill_id,
        runs_wanted=wanted,
        batch_size=parts.config.batch_size,
        now=now,
        unpaused=True,
    )


async def _cancelled_by_airflow(parts: Parts, backfill_id: int, now: dt.datetime) -> None:
    ended = await parts.tx.write(lambda conn: cancel_cancelled_by_airflow(conn, backfill_id, now))
    if ended is not None:
        log.info(
            "backfill %s was cancelled by Airflow; cancelled: %s ended as failed",
            backfill_id,
            counted(ended, "run"),
        )


async def _complete_if_done(parts: Parts, backfill_id: int, now: dt.datetime) -> bool:
    if not await parts.tx.write(lambda conn: complete_if_done(conn, backfill_id, now)):
        return False
    log.info("backfill %s completed", backfill_id)
    return True
