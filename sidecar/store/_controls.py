"""The ledger's backfill controls: several backfills of a DAG, a failed-runs limit, a priority, a DAG cap.

Part of the ledger (:mod:`sidecar.store._ledger`). What Airflow has no column for lives in
``sidecar_backfill`` (migration step 6, every column nullable: NULL reads as the default):

- ``concurrent``: the backfill may run beside the DAG's other open backfills as long as
  their date ranges do not overlap (:func:`check_room`, under the per-DAG creation lock);
  without it Airflow's own rule holds (one open backfill per DAG). Airflow's own create
  still counts open backfills and refuses while any is open, as it does today.
- ``max_failed_runs``: once that many runs of the backfill have failed (beyond those a
  user's unpause forgave), the tick pauses it with a reason
  (:func:`sidecar.store._ledger.pause_for_failed_runs`, ``Event.PAUSE_FOR_FAILED_RUNS``).
- ``priority`` and ``dag_max_active_runs``: read by the scheduler shim's fairness, which
  chooses the backfill runs that start (``airflow_shim/_fairness.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.errors import BackfillRangeOverlaps
from sidecar.store._tables import backfill, sidecar_backfill

__all__ = ["CONTROL_READ_COLUMNS", "Controls", "check_no_overlap"]


@dataclass(frozen=True, slots=True)
class Controls:
    """A backfill's controls beyond Airflow's columns (the defaults are Airflow's behaviour)."""

    max_failed_runs: int | None = None
    """Pause the backfill once this many of its runs have failed; None: never."""
    priority: int = 0
    """Higher first, where the shim chooses which backfill runs start."""
    dag_max_active_runs: int | None = None
    """A run of it starts only while fewer backfill runs of its DAG are running; None: no cap."""
    concurrent: bool = False
    """May run beside the DAG's other open backfills whose ranges do not overlap its own."""

    @classmethod
    def of(cls, row: Any) -> Controls:
        """The controls a row's ``sidecar_backfill`` columns hold (NULL: the default)."""
        return cls(
            max_failed_runs=row.max_failed_runs,
            priority=int(row.priority or 0),
            dag_max_active_runs=row.dag_max_active_runs,
            concurrent=bool(row.concurrent),
        )

    def columns(self) -> dict[str, Any]:
        """The ``sidecar_backfill`` values that store them."""
        return {
            "max_failed_runs": self.max_failed_runs,
            "priority": self.priority,
            "dag_max_active_runs": self.dag_max_active_runs,
            "concurrent": self.concurrent,
        }


#: The sidecar columns a backfill's reads carry for its controls.
CONTROL_READ_COLUMNS = (
    sidecar_backfill.c.max_failed_runs,
    sidecar_backfill.c.priority,
    sidecar_backfill.c.dag_max_active_runs,
    sidecar_backfill.c.concurrent,
    sidecar_backfill.c.pause_reason,
)


async def check_no_overlap(
    conn: AsyncConnection, dag_id: str, from_date: dt.datetime, to_date: dt.datetime
) -> None:
    """A concurrent backfill's rule: no open backfill of the DAG has a range overlapping ``[from_date, to_date]``.

    Ranges are inclusive at both ends, as Airflow's are. Race-free when called under the
    per-DAG creation lock (:func:`sidecar.store._creation.insert_backfill`).

    Raises:
        BackfillRangeOverlaps: field ``backfill.from_date``, naming the backfill and the dates.
    """
    row = (
        await conn.execute(
            sa.select(backfill.c.id, backfill.c.from_date, backfill.c.to_date)
            .where(
                backfill.c.dag_id == dag_id,
                backfill.c.completed_at.is_(None),
                backfill.c.from_date <= to_date,
                backfill.c.to_date >= from_date,
            )
            .order_by(backfill.c.id)
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return
    start, end = max(row.from_date, from_date), min(row.to_date, to_date)
    raise BackfillRangeOverlaps(
        f"the range overlaps backfill {row.id} of DAG {dag_id} (open, {_iso(row.from_date)} to "
        f"{_iso(row.to_date)}) from {_iso(start)} to {_iso(end)}; concurrent backfills of a DAG "
        "must not overlap",
        field="backfill.from_date",
    )


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()
