"""Ending a backfill's runs on cancel, the way Airflow's "mark failed" ends a run.

Airflow's own cancel fails only queued runs and leaves their task instances without a
state. Here a run that is stopped gets what ``set_dag_run_state_to_failed`` gives it:
task instances that are running (or deferred, rescheduling, awaiting input) fail,
every other unfinished one is skipped, and the run ends ``failed`` with an end date.
Finished task instances keep their state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._tables import dag_run, task_instance

#: Task instance states Airflow's "mark failed" treats as running (they become failed).
RUNNING_TI_STATES = ("running", "deferred", "up_for_reschedule", "awaiting_input")
#: Finished task instance states: left as they are.
FINISHED_TI_STATES = ("success", "failed", "skipped", "upstream_failed", "removed")


async def fail_runs(
    conn: AsyncConnection,
    backfill_id: int,
    dag_id: str,
    run_states: Sequence[str],
    now: dt.datetime,
) -> int:
    """Fail a backfill's runs in ``run_states`` with their task instances; return how many.

    Runs inside the caller's transaction, so a cancel is all or nothing.
    """
    runs = (
        sa.select(dag_run.c.run_id)
        .where(dag_run.c.backfill_id == backfill_id, dag_run.c.state.in_(tuple(run_states)))
        .scalar_subquery()
    )
    of_runs = (task_instance.c.dag_id == dag_id, task_instance.c.run_id.in_(runs))
    await conn.execute(
        task_instance.update()
        .where(*of_runs, task_instance.c.state.in_(RUNNING_TI_STATES))
        .values(
            state="failed",
            start_date=sa.func.coalesce(task_instance.c.start_date, now),
            end_date=now,
            updated_at=now,
        )
    )
    await conn.execute(
        task_instance.update()
        .where(
            *of_runs,
            sa.or_(
                task_instance.c.state.is_(None),
                task_instance.c.state.not_in(RUNNING_TI_STATES + FINISHED_TI_STATES),
            ),
        )
        .values(
            state="skipped",
            start_date=sa.func.coalesce(task_instance.c.start_date, now),
            end_date=now,
            updated_at=now,
        )
    )
    result = await conn.execute(
        dag_run.update()
        .where(dag_run.c.backfill_id == backfill_id, dag_run.c.state.in_(tuple(run_states)))
        .values(state="failed", end_date=now, updated_at=now)
    )
    return int(result.rowcount or 0)
