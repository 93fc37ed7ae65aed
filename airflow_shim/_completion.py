"""Which backfills Airflow's completion timer must leave open, from the sidecar's Tick answers.

Airflow 3.3.2's scheduler marks a backfill complete every 30 s once none of its runs is
queued or running (``SchedulerJobRunner._mark_backfills_complete``). A windowed backfill
has such quiet moments between windows while the sidecar still has runs to write, so the
shim holds back completion of:

- every backfill the last Tick named in ``materializing_backfill_ids``;
- every backfill created shortly before that Tick was sent, or after it (a Create that
  landed after the sidecar listed its backfills is not in the list yet);
- every backfill at all when no Tick has been answered recently: the shim cannot tell the
  sidecar's backfills from Airflow's own, so a sidecar that is down means backfills wait.

This module holds no Airflow import, so its rules are tested without a scheduler.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: A Tick answered longer ago than this no longer says what the sidecar is writing.
FRESH_FOR = 60.0
#: Backfills created this long before the last answered Tick was sent (or later) are held.
YOUNG_FOR = dt.timedelta(seconds=60)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class AnsweredTick:
    """What the last answered Tick said, and when."""

    materializing: frozenset[int]
    """Backfills the sidecar is still writing runs for."""
    sent_at: dt.datetime
    """Wall-clock time the Tick was sent (compared with ``backfill.created_at``)."""
    answered_at: float
    """Monotonic time the answer arrived (for freshness)."""


class CompletionHold:
    """Remembers the last answered Tick and says which completions must wait.

    Args:
        fresh_for: seconds an answered Tick stays authoritative.
        young_for: backfills created within this span before the Tick was sent are held.
        clock: monotonic clock (injectable for tests).
        wall_clock: timezone-aware UTC wall clock (injectable for tests).
    """

    def __init__(
        self,
        *,
        fresh_for: float = FRESH_FOR,
        young_for: dt.timedelta = YOUNG_FOR,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.fresh_for = fresh_for
        self.young_for = young_for
        self._clock = clock
        self._wall_clock = wall_clock
        self.last: AnsweredTick | None = None

    def sending(self) -> dt.datetime:
        """The wall-clock time to pass to :meth:`answered` for a Tick about to be sent."""
        return self._wall_clock()

    def answered(self, materializing: Iterable[int], sent_at: dt.datetime) -> None:
        """Record a Tick's answer: the backfills still being written, and when it was sent."""
        self.last = AnsweredTick(frozenset(materializing), sent_at, self._clock())

    def age(self) -> float | None:
        """Seconds since the last answer arrived; None when none ever did."""
        return None if self.last is None else self._clock() - self.last.answered_at

    def fresh(self) -> bool:
        """Whether the last answer is recent enough to let any backfill complete."""
        age = self.age()
        return age is not None and age <= self.fresh_for

    def holds(self, backfill_id: int, created_at: dt.datetime | None) -> bool:
        """Whether completing this backfill now might close one the sidecar is still writing."""
        last = self.last
        if last is None or not self.fresh():
            return True
        if backfill_id in last.materializing:
            return True
        return created_at is None or created_at >= last.sent_at - self.young_for
