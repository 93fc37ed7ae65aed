"""The ledger's transition table: every allowed and every refused transition, and what a backfill's phase and state are."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from sidecar.errors import FailedPrecondition, InvalidTransition
from sidecar.store import TRANSITIONS, Event, Phase, transition
from sidecar.store._phases import AirflowClosing, airflow_closing, lifecycle_of, state_of
from sidecar.vocabulary import State

M, D, C, X = Phase.MATERIALIZING, Phase.MATERIALIZED, Phase.COMPLETED, Phase.CANCELLED
S = Phase.SET_ASIDE

#: The whole table, written out: (phase, event) -> next phase. Every other pair is refused.
ALLOWED = {
    (M, Event.PAUSE): M,
    (M, Event.UNPAUSE): M,
    (M, Event.CANCEL): X,
    (M, Event.FINISH_WRITING): D,
    (M, Event.SET_ASIDE): S,
    (S, Event.PAUSE): S,
    (S, Event.UNPAUSE): M,  # resume: retry writing it
    (S, Event.CANCEL): X,
    (S, Event.SET_ASIDE): S,
    (D, Event.PAUSE): D,
    (D, Event.UNPAUSE): D,
    (D, Event.CANCEL): X,
    (D, Event.COMPLETE): C,
    (C, Event.COMPLETE): C,
    # max_failed_runs reached: paused by the tick, the phase kept (never once it has ended)
    (M, Event.PAUSE_FOR_FAILED_RUNS): M,
    (S, Event.PAUSE_FOR_FAILED_RUNS): S,
    (D, Event.PAUSE_FOR_FAILED_RUNS): D,
}


@pytest.mark.parametrize(("phase", "event"), list(ALLOWED))
def test_allowed_transitions(phase: Phase, event: Event) -> None:
    assert transition(7, phase, event) is ALLOWED[phase, event]


REFUSED = [pair for pair in itertools.product(Phase, Event) if pair not in ALLOWED]


@pytest.mark.parametrize(("phase", "event"), REFUSED)
def test_refused_transitions_name_the_action_the_backfill_and_its_phase(phase: Phase, event: Event) -> None:
    with pytest.raises(InvalidTransition) as excinfo:
        transition(7, phase, event)
    assert str(excinfo.value) == f"cannot {event.value}: backfill 7 is {phase.value}"
    assert isinstance(excinfo.value, FailedPrecondition)
    assert excinfo.value.reason == "INVALID_STATE_TRANSITION"


def test_the_messages_callers_see() -> None:
    with pytest.raises(InvalidTransition, match=r"^cannot cancel: backfill 7 is cancelled$"):
        transition(7, X, Event.CANCEL)
    with pytest.raises(InvalidTransition, match=r"^cannot pause: backfill 12 is completed$"):
        transition(12, C, Event.PAUSE)
    with pytest.raises(InvalidTransition, match=r"^cannot finish writing: backfill 3 is materialized$"):
        transition(3, D, Event.FINISH_WRITING)


def test_the_table_covers_every_phase_and_ended_phases_are_final() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert {(p, e): n for p, row in TRANSITIONS.items() for e, n in row.items()} == ALLOWED
    assert not TRANSITIONS[X]
    assert set(TRANSITIONS[C]) == {Event.COMPLETE}


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("stored", "completed_at", "phase"),
    [
        (M, None, M),
        (M, NOW, M),  # Airflow's timer completed it early: runs remain, the tick reopens it
        (S, None, S),
        (S, NOW, S),  # set aside: runs remain to be written once resumed; Airflow's timer cannot end it
        (D, None, D),
        (D, NOW, C),  # Airflow's timer completed it: done
        (C, NOW, C),
        (C, None, C),
        (X, NOW, X),
        (X, None, X),
        (None, None, D),  # Airflow made it: all its runs are written
        (None, NOW, C),
    ],
)
def test_lifecycle_folds_airflows_completed_at_in(
    stored: Phase | None, completed_at: dt.datetime | None, phase: Phase
) -> None:
    assert lifecycle_of(stored, completed_at) is phase


@pytest.mark.parametrize(
    ("phase", "paused", "state"),
    [
        (M, False, State.ACTIVE),
        (M, True, State.PAUSED),
        (D, False, State.ACTIVE),
        (D, True, State.PAUSED),
        (S, False, State.ACTIVE),  # Airflow's UI has no such state: the reason is a field of its own
        (S, True, State.PAUSED),
        (C, True, State.COMPLETED),
        (X, True, State.CANCELLED),
        (X, None, State.CANCELLED),
    ],
)
def test_state_a_caller_sees(phase: Phase, paused: bool | None, state: State) -> None:
    assert state_of(phase, paused) is state


#: Airflow's ``completed_at`` on a backfill in each stored phase, paused or not: what it means.
#: Its cancel pauses then completes; its completion timer only completes.
CLOSINGS = {
    (M, True): AirflowClosing.CANCELLED,  # Airflow's cancel: the ledger cancels it too
    (M, False): AirflowClosing.CLOSED_EARLY,  # the timer, no shim (or a stale one): reopened
    (S, True): AirflowClosing.CANCELLED,
    (S, False): None,  # set aside: reopened once resumed
    (D, True): None,  # fully written: completed_at means completed
    (D, False): None,
    (C, True): None,
    (C, False): None,
    (X, True): None,
    (X, False): None,
}


@pytest.mark.parametrize(("phase", "paused"), list(CLOSINGS))
def test_what_airflows_completed_at_means(phase: Phase, paused: bool) -> None:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert airflow_closing(phase, now, paused) is CLOSINGS[phase, paused]
    assert airflow_closing(phase, None, paused) is None  # not closed by Airflow: nothing to do


def test_airflows_cancel_is_a_transition_of_the_table() -> None:
    # Every phase Airflow's cancel can close is one the table lets the ledger cancel, to CANCELLED;
    # the cancelled backfill then refuses every control, so it is never reopened or resumed.
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    closed = [p for p in Phase if airflow_closing(p, now, True) is AirflowClosing.CANCELLED]
    assert closed == [M, S]
    for phase in closed:
        assert transition(7, phase, Event.CANCEL) is X
    assert TRANSITIONS[X] == {}
    # A timer closing is only ever read on a phase that is still writing (the tick reopens it).
    early = [p for p in Phase if airflow_closing(p, now, False) is AirflowClosing.CLOSED_EARLY]
    assert early == [M]
