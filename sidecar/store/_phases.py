"""A backfill's lifecycle: its phases, the one table of allowed transitions, and its guard.

The sidecar keeps its own lifecycle of a backfill in ``sidecar_backfill.phase``; Airflow's
``backfill`` row adds ``completed_at`` (its scheduler may complete a backfill on its own)
and ``is_paused``. :func:`lifecycle_of` folds them into one :class:`Phase`, and every
change of phase (or refusal of a user action) goes through :func:`transition`, over the
table :data:`TRANSITIONS`, the way asyncpg's ``transaction.py`` guards its states::

    materializing --finish writing--> materialized --complete--> completed
       |    ^                              |
       |    +--unpause--+                  |
     set aside          |                  |
       v                |                  |
    set_aside ----------+                  |
       |                                   |
       +-------------cancel----------------+-----------------> cancelled

A backfill whose batch fails for a reason that is not transient is *set aside*: the
tick writes no more of its runs (every other backfill keeps being written), its reason
is stored, Airflow's completion timer is held off it (it is in :data:`TICKED`, not in
:data:`AIRFLOW_COMPLETES`), and a caller may cancel it, or resume it by unpausing it
(once the cause, say the DAG, is fixed; if it fails again it is set aside again).

Pausing and unpausing keep the phase (they flip ``backfill.is_paused``) but are guarded
the same way; a paused backfill gets no new runs until it is unpaused, whoever paused it.
The tick pauses an open backfill whose failed runs reached its ``max_failed_runs``
(:data:`Event.PAUSE_FOR_FAILED_RUNS`, the reason stored in ``pause_reason``); an unpause
clears the reason and forgives the runs failed so far.

Airflow's own controls are authoritative, and :func:`airflow_closing` reads them. Airflow's
cancel (its UI's button, ``PUT /api/v2/backfills/{id}/cancel``, its CLI) sets ``is_paused``
and then ``completed_at``; its completion timer sets only ``completed_at``. So a backfill
with runs still to write whose ``completed_at`` is set *with* ``is_paused`` was cancelled by
Airflow, and the ledger cancels it (:data:`Event.CANCEL`, as the sidecar's own cancel); one
without ``is_paused`` was closed early by the timer, and the tick reopens it. The one
ambiguity: a backfill paused by its user and then completed by Airflow's timer (no shim
holding the timer back) reads as cancelled, and stays cancelled. A new phase is added here and nowhere else: a member of :class:`Phase`,
its rows in :data:`TRANSITIONS` (and the :class:`Event` that leads to it), and, as the
case may be, an entry in :data:`TICKED` (the tick visits it), :data:`SHOWN_AS` (a
caller sees a state of its own) and :data:`AIRFLOW_COMPLETES` (Airflow's timer may
complete it).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sidecar.errors import InvalidTransition
from sidecar.store._tables import backfill, sidecar_backfill
from sidecar.vocabulary import State

__all__ = [
    "AIRFLOW_COMPLETES",
    "PENDING_RUNS",
    "SHOWN_AS",
    "TICKED",
    "TRANSITIONS",
    "AirflowClosing",
    "Event",
    "Phase",
    "WriteFailure",
    "airflow_closing",
    "lifecycle_of",
    "state_filter",
    "state_of",
    "transition",
]


class Phase(enum.Enum):
    """The sidecar's own lifecycle of a backfill (``sidecar_backfill.phase``)."""

    MATERIALIZING = "materializing"
    """Runs remain to be written."""
    MATERIALIZED = "materialized"
    """Every slot is written; waiting for the runs to finish."""
    SET_ASIDE = "set_aside"
    """Writing failed for a reason a retry would not cure: no runs are written until it is resumed."""
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Event(enum.Enum):
    """What may happen to a backfill; the value reads in "cannot <value>: ..." errors."""

    PAUSE = "pause"
    UNPAUSE = "unpause"
    CANCEL = "cancel"
    FINISH_WRITING = "finish writing"
    """The plan is exhausted, or the DAG is gone: nothing more will be written."""
    COMPLETE = "complete"
    """Every run has finished (idempotent: Airflow's own timer may have completed it)."""
    SET_ASIDE = "set aside"
    """A batch failed for a reason that is not transient (the reason is stored with it)."""
    PAUSE_FOR_FAILED_RUNS = "pause for failed runs"
    """Its failed runs reached its ``max_failed_runs``: paused by the tick, the reason stored with it."""


#: The one table of allowed transitions: ``phase -> {event: next phase}``. Anything else is refused.
TRANSITIONS: Mapping[Phase, Mapping[Event, Phase]] = {
    Phase.MATERIALIZING: {
        Event.PAUSE: Phase.MATERIALIZING,
        Event.PAUSE_FOR_FAILED_RUNS: Phase.MATERIALIZING,
        Event.UNPAUSE: Phase.MATERIALIZING,
        Event.CANCEL: Phase.CANCELLED,
        Event.FINISH_WRITING: Phase.MATERIALIZED,
        Event.SET_ASIDE: Phase.SET_ASIDE,
    },
    Phase.SET_ASIDE: {
        Event.PAUSE: Phase.SET_ASIDE,
        Event.PAUSE_FOR_FAILED_RUNS: Phase.SET_ASIDE,
        Event.UNPAUSE: Phase.MATERIALIZING,
        Event.CANCEL: Phase.CANCELLED,
        Event.SET_ASIDE: Phase.SET_ASIDE,
    },
    Phase.MATERIALIZED: {
        Event.PAUSE: Phase.MATERIALIZED,
        Event.PAUSE_FOR_FAILED_RUNS: Phase.MATERIALIZED,
        Event.UNPAUSE: Phase.MATERIALIZED,
        Event.CANCEL: Phase.CANCELLED,
        Event.COMPLETE: Phase.COMPLETED,
    },
    Phase.COMPLETED: {Event.COMPLETE: Phase.COMPLETED},
    Phase.CANCELLED: {},
}

#: Phases the tick visits (stored phase): it writes the next runs of one, completes another,
#: and holds Airflow's completion timer off all but the last.
TICKED = (Phase.MATERIALIZING, Phase.SET_ASIDE, Phase.MATERIALIZED)

#: Phases whose plan still has slots to write (listed as pending).
PENDING_RUNS = frozenset({Phase.MATERIALIZING, Phase.SET_ASIDE})

#: Phases in which Airflow's ``completed_at`` means completed (its scheduler's timer may set it).
#: Not MATERIALIZING: runs remain to be written, and the tick reopens it; nor SET_ASIDE: runs
#: remain to be written once it is resumed (or it is cancelled).
AIRFLOW_COMPLETES = frozenset({Phase.MATERIALIZED, Phase.COMPLETED})

#: The caller-facing state of each ended phase; the others show ACTIVE or PAUSED (``is_paused``).
SHOWN_AS: Mapping[Phase, State] = {Phase.COMPLETED: State.COMPLETED, Phase.CANCELLED: State.CANCELLED}


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """Why a backfill's last batch failed (``sidecar_backfill.failure_*``), as a caller may see it."""

    reason: str
    """The class of the failure: a database failure class (``connection``, ``data_exception``...) or ``internal``."""
    message: str
    """A sentence safe to show a caller: no SQL, no parameters; a correlation id into the log."""
    attempts: int
    """Ticks in a row that failed to write it."""
    failed_at: dt.datetime
    set_aside: bool
    """True: no runs are written until it is resumed or cancelled; False: retried next tick."""

    @classmethod
    def of(cls, row: Any, phase: Phase) -> WriteFailure | None:
        """The failure a row's ``failure_*`` columns hold, if any (``phase``: the backfill's)."""
        if row.failure_reason is None:
            return None
        return cls(
            reason=row.failure_reason,
            message=row.failure_message or "",
            attempts=int(row.failure_attempts or 0),
            failed_at=row.failed_at,
            set_aside=phase is Phase.SET_ASIDE,
        )


def transition(backfill_id: int, current: Phase, event: Event) -> Phase:
    """The phase after ``event``, or a terse refusal.

    Raises:
        InvalidTransition: e.g. "cannot cancel: backfill 7 is cancelled".
    """
    after = TRANSITIONS[current].get(event)
    if after is None:
        raise InvalidTransition(f"cannot {event.value}: backfill {backfill_id} is {current.value}")
    return after


class AirflowClosing(enum.Enum):
    """What Airflow's ``completed_at`` means on a backfill whose runs are not all written."""

    CANCELLED = "cancelled"
    """Airflow's cancel (it pauses, then completes): the ledger cancels the backfill."""
    CLOSED_EARLY = "closed early"
    """Airflow's completion timer (it completes only): the tick reopens the backfill."""


def airflow_closing(
    stored: Phase, completed_at: dt.datetime | None, is_paused: bool
) -> AirflowClosing | None:
    """How to read Airflow's ``completed_at`` on a backfill in stored phase ``stored``; None: nothing to do.

    Only a backfill with runs left to write (:data:`PENDING_RUNS`) is concerned: in the
    other phases ``completed_at`` means completed (:data:`AIRFLOW_COMPLETES`) or the backfill
    has ended. A set-aside backfill closed by the timer stays as it is (it is reopened once
    resumed); cancelled by Airflow, it is cancelled.
    """
    if completed_at is None or stored not in PENDING_RUNS:
        return None
    if is_paused:
        return AirflowClosing.CANCELLED
    return AirflowClosing.CLOSED_EARLY if stored is Phase.MATERIALIZING else None


def lifecycle_of(stored: Phase | None, completed_at: dt.datetime | None) -> Phase:
    """A backfill's phase from its sidecar row's phase and Airflow's ``completed_at``.

    A backfill Airflow made has no sidecar row (``stored`` None): its runs are all
    written, so it is materialized until Airflow completes it.
    """
    phase = Phase.MATERIALIZED if stored is None else stored
    if completed_at is not None and phase in AIRFLOW_COMPLETES:
        return Phase.COMPLETED
    return phase


def state_of(phase: Phase, is_paused: bool | None) -> State:
    """The caller-facing state of a backfill in ``phase`` (from :func:`lifecycle_of`)."""
    return SHOWN_AS.get(phase) or (State.PAUSED if is_paused else State.ACTIVE)


def _lifecycle_sql() -> sa.ColumnElement[str]:
    """:func:`lifecycle_of` in SQL, over ``backfill`` outer-joined with ``sidecar_backfill``."""
    phase = sa.func.coalesce(sidecar_backfill.c.phase, Phase.MATERIALIZED.value)
    completed = sa.and_(backfill.c.completed_at.is_not(None), phase.in_([p.value for p in AIRFLOW_COMPLETES]))
    return sa.case((completed, Phase.COMPLETED.value), else_=phase)


def state_filter(state: State) -> sa.ColumnElement[bool]:
    """The SQL condition matching :func:`state_of` (for listing backfills by state)."""
    phase = _lifecycle_sql()
    ended = [p.value for p, shown in SHOWN_AS.items() if shown is state]
    if ended:
        return phase.in_(ended)
    open_ = phase.not_in([p.value for p in SHOWN_AS])
    paused = sa.func.coalesce(backfill.c.is_paused, False)
    return sa.and_(open_, paused if state is State.PAUSED else sa.not_(paused))
