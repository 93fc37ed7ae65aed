"""Fair shares for backfill runs inside Airflow 3.3.2's scheduler loop.

Airflow examines at most ``max_dagruns_per_loop_to_schedule`` running runs per loop and
orders backfill runs last, so once that many regular runs are running a backfill's
running runs are never examined again (apache/airflow#58554); its queued runs are
ordered last too. These queries pick the backfill runs Airflow left out, round robin
across backfills (oldest backfill first, plan order within one), locked the way Airflow
locks the runs it examines (``FOR UPDATE SKIP LOCKED``), and bounded by a global cap on
running backfill runs so that backfills never crowd out scheduled runs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from airflow.models.backfill import Backfill, BackfillDagRun
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.utils.sqlalchemy import with_row_locks
from airflow.utils.state import DagRunState
from sqlalchemy import false, func, select, text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


#: Serialises the cap check between schedulers (pg_advisory_xact_lock key: "sidecar cap").
_CAP_LOCK_KEY = 0x51DECA9


def count_running_backfill_runs(session: Session) -> int:
    """Backfill runs in the running state, across all backfills.

    On PostgreSQL it first takes a transaction-level advisory lock, held until the
    scheduler commits the runs it starts: two schedulers never both see room for the
    same last slot under the cap.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CAP_LOCK_KEY})
    return int(
        session.scalar(
            select(func.count(DagRun.id)).where(
                DagRun.state == DagRunState.RUNNING, DagRun.backfill_id.is_not(None)
            )
        )
        or 0
    )


def backfill_runs_left_out(
    session: Session, state: DagRunState, seen: Collection[int], limit: int
) -> list[DagRun]:
    """Up to ``limit`` backfill runs in ``state`` that are not in ``seen``, fairly ordered and row-locked.

    Round robin across backfills: every backfill's first run (in plan order) comes
    before any backfill's second, and among equals the oldest backfill goes first.
    """
    if limit <= 0:
        return []
    ranked = (
        select(
            DagRun.id.label("id"),
            func.row_number()
            .over(partition_by=DagRun.backfill_id, order_by=BackfillDagRun.sort_ordinal)
            .label("turn"),
            DagRun.backfill_id.label("backfill_id"),
        )
        .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
        .join(Backfill, Backfill.id == DagRun.backfill_id)
        .join(DagModel, DagModel.dag_id == DagRun.dag_id)
        .where(
            DagRun.state == state,
            DagRun.run_after <= func.now(),
            DagModel.is_paused == false(),
            DagModel.is_stale == false(),
            Backfill.is_paused == false(),
        )
    )
    if seen:
        ranked = ranked.where(DagRun.id.not_in(list(seen)))
    sub = ranked.subquery()
    query = (
        select(DagRun).join(sub, sub.c.id == DagRun.id).order_by(sub.c.turn, sub.c.backfill_id).limit(limit)
    )
    return list(session.scalars(with_row_locks(query, of=DagRun, session=session, skip_locked=True)))
