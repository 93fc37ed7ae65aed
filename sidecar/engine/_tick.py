"""The tick: topping up every materialising backfill to its window, completing finished ones.

Airflow's controls are obeyed on the next tick and never reversed: a paused backfill gets
no new runs (an eager one interrupted mid-way waits too) until it is unpaused, and one
that Airflow's own cancel closed is cancelled by the ledger as the sidecar's cancel would
(:func:`sidecar.store.airflow_closing` tells Airflow's cancel from its completion timer).
A backfill whose failed runs reach its ``max_failed_runs`` is paused, with its reason, before
anything else is written for it (:func:`_stop_losses`). Each backfill is handled on its own: a failure of one is contained
(:mod:`sidecar.engine._containment`: retried next tick if transient, else set aside)
and the tick goes on with the others, so one backfill can never stop the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace

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
    pause_for_failed_runs,
    reopen_backfill,
    tick_entries,
)
from sidecar.vocabulary import Mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    """What one tick did."""

    runs_written: int
    backfills_completed: int
    materializing: list[int]


async def tick(parts: Parts, policies: SchedulerPolicies, counter: BackgroundCounter) -> TickResult:
    """One pass over the backfills in a ticked phase (the caller serialises ticks)."""
    now = parts.clock()
    entries = await parts.tx.read(tick_entries)
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
                continue
            writing = entry.phase is Phase.MATERIALIZING
            try:
                if await _stop_losses(parts, entry, now):
                    entry = replace(entry, is_paused=True)
                if writing:
                    materializing.append(entry.backfill_id)
                    if entry.planned_count is None:
                        counter.ensure(entry.backfill_id)  # counting was cut short: resume it
                    if not hooks and not entry.is_paused:  # paused: no new runs until unpaused
                        written += await _top_up(parts, entry, now)
                elif await _complete_if_done(parts, entry.backfill_id, now):
                    completed += 1
            except Exception as exc:  # contained: the other backfills are still written
                await contain(parts, entry.backfill_id, exc, now, writing=writing)
    return TickResult(written, completed, materializing)


async def _stop_losses(parts: Parts, entry: TickEntry, now: dt.datetime) -> bool:
    """Pause a backfill whose failed runs reached its ``max_failed_runs``; True if it was paused now.

    A backfill the sidecar paused so and Airflow unpaused (its own control wins) has the
    runs failed so far forgiven, as the sidecar's own unpause does.
    """
    if entry.max_failed_runs is None:
        return False
    if entry.pause_reason is not None and not entry.is_paused:
        await parts.tx.write(lambda conn: forgive_failed_runs(conn, entry.backfill_id, now))
        log.info(
            "backfill %s was unpaused by Airflow; its failed runs so far are forgiven", entry.backfill_id
        )
        return False
    if entry.is_paused:
        return False
    # A bounded read first: the rows are locked only once the limit is reached.
    limit = entry.failed_runs_forgiven + entry.max_failed_runs
    failed = await parts.tx.read(lambda conn: count_failed_runs(conn, entry.backfill_id, at_most=limit))
    if failed < limit:
        return False
    reason = await parts.tx.write(lambda conn: pause_for_failed_runs(conn, entry.backfill_id, now))
    if reason is None:
        return False
    log.warning("backfill %s %s", entry.backfill_id, reason)
    return True


async def _top_up(parts: Parts, entry: TickEntry, now: dt.datetime) -> int:
    if entry.closing is AirflowClosing.CLOSED_EARLY:
        # Airflow's completion timer closed it while runs remain to be written: reopen it.
        await parts.tx.write(lambda conn: reopen_backfill(conn, entry.backfill_id))
        log.warning("backfill %s was completed early by Airflow's timer; reopened", entry.backfill_id)
    if entry.mode is Mode.EAGER:
        wanted = None  # an eager backfill interrupted mid-way: finish it
    else:
        window = entry.max_active_runs + parts.config.lookahead
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
            "backfill %s was cancelled by Airflow; cancelled: %s runs ended as failed", backfill_id, ended
        )


async def _complete_if_done(parts: Parts, backfill_id: int, now: dt.datetime) -> bool:
    if not await parts.tx.write(lambda conn: complete_if_done(conn, backfill_id, now)):
        return False
    log.info("backfill %s completed", backfill_id)
    return True
