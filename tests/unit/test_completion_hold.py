"""The shim's completion hold-back rules (``airflow_shim._completion``), on injected clocks."""

from __future__ import annotations

import datetime as dt

from airflow_shim._completion import FRESH_FOR, YOUNG_FOR, CompletionHold

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(hours=1)


class Clocks:
    """A monotonic and a wall clock that move together."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def wall(self) -> dt.datetime:
        return NOW + dt.timedelta(seconds=self.elapsed)


def _hold(clocks: Clocks) -> CompletionHold:
    return CompletionHold(clock=clocks.monotonic, wall_clock=clocks.wall)


def test_before_any_answer_every_backfill_is_held() -> None:
    hold = _hold(Clocks())
    assert hold.age() is None
    assert not hold.fresh()
    assert hold.holds(1, OLD)


def test_a_fresh_answer_holds_only_what_the_sidecar_is_writing() -> None:
    clocks = Clocks()
    hold = _hold(clocks)
    hold.answered([7, 9], hold.sending())
    assert hold.fresh()
    assert hold.holds(7, OLD) and hold.holds(9, OLD)
    assert not hold.holds(8, OLD)  # Airflow's own backfill (or a finished sidecar one) completes


def test_backfills_created_shortly_before_or_after_the_tick_are_held() -> None:
    clocks = Clocks()
    hold = _hold(clocks)
    sent = hold.sending()
    hold.answered([], sent)
    assert hold.holds(3, sent + dt.timedelta(seconds=5))  # created after the sidecar listed its own
    assert hold.holds(3, sent - YOUNG_FOR + dt.timedelta(seconds=1))
    assert not hold.holds(3, sent - YOUNG_FOR - dt.timedelta(seconds=1))
    assert hold.holds(3, None)


def test_an_old_answer_holds_everything_again() -> None:
    clocks = Clocks()
    hold = _hold(clocks)
    hold.answered([], hold.sending())
    clocks.elapsed = FRESH_FOR
    assert hold.fresh() and not hold.holds(1, OLD)
    clocks.elapsed = FRESH_FOR + 0.1
    assert not hold.fresh()
    assert hold.age() == FRESH_FOR + 0.1
    assert hold.holds(1, OLD)
    hold.answered([], hold.sending())  # the sidecar is back
    assert not hold.holds(1, OLD)


def test_each_answer_replaces_the_last() -> None:
    hold = _hold(Clocks())
    hold.answered([1], hold.sending())
    hold.answered([2], hold.sending())
    assert hold.holds(2, OLD) and not hold.holds(1, OLD)
