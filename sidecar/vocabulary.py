"""The words every layer shares: how a backfill runs, what it reprocesses, what a caller sees.

One enum per concept, used unchanged from the API converter through the engine to the
store (which writes their ``value``, the strings Airflow and the sidecar's own table
store), and :func:`counted`, how a count of things reads in a message. A leaf module: it
imports nothing from the sidecar, so any layer may use it.
"""

from __future__ import annotations

import enum

__all__ = ["Disposition", "Mode", "ReprocessBehavior", "State", "counted"]


class Mode(enum.Enum):
    """How a backfill's runs are materialised."""

    WINDOWED = "windowed"
    """A few runs ahead of the scheduler (``max_active_runs`` plus a lookahead)."""
    EAGER = "eager"
    """Every run at once, as Airflow's own backfill does."""


class ReprocessBehavior(enum.Enum):
    """Airflow's reprocess behaviours, in Airflow's order (its 422 messages list them so)."""

    FAILED = "failed"
    COMPLETED = "completed"
    NONE = "none"


class State(enum.Enum):
    """The state a caller sees."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Disposition(enum.Enum):
    """What happens to a planned slot: Airflow's reprocess matrix, plus "not written yet".

    The values of the skipped ones are what Airflow writes into
    ``backfill_dag_run.exception_reason``.
    """

    CREATE = "create"
    REPROCESS = "reprocess"
    ALREADY_EXISTS = "already exists"
    IN_FLIGHT = "in flight"
    PENDING = "pending"
    """A slot of a windowed backfill not written yet."""


def counted(count: float, noun: str, plural: str | None = None, spec: str = "") -> str:
    """``count`` things, as a message reads them: ``1 run``, ``2 runs``, ``0 runs``.

    ``plural`` when it is not ``noun`` + "s"; ``spec`` formats the number (``","``: ``100,000``).
    """
    return f"{count:{spec}} {noun if count == 1 else plural or noun + 's'}"
