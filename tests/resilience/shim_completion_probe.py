"""Drive the shim's runner against a real Airflow 3.3.2 database: Airflow's completion timer, held back.

Run as a script in a subprocess whose environment points Airflow at one metadata database
(Airflow's ORM configuration is process-global)::

    python tests/resilience/shim_completion_probe.py '{"target": ..., "dead_target": ..., "fresh_for": 2}'

It builds ``SidecarSchedulerJobRunner`` (Airflow's real ``SchedulerJobRunner`` underneath,
with a real ``TickClient``), creates Airflow's own backfills with Airflow's own
``_create_backfill``, lets every backfill run finish (so Airflow's timer would close them
all), and calls the runner's ``_mark_backfills_complete`` after each situation. The output's
last line is ``RESULTS <json>``: per step, the DAGs whose backfill is completed.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Any


def main(options: dict[str, Any]) -> dict[str, Any]:
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.backfill import Backfill, ReprocessBehavior, _create_backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select, update

    from airflow_shim._completion import CompletionHold
    from airflow_shim.client import TickClient
    from airflow_shim.runner import SidecarSchedulerJobRunner

    def airflow_backfill(dag_id: str, *, age: dt.timedelta) -> None:
        backfill = _create_backfill(
            dag_id=dag_id,
            from_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            to_date=dt.datetime(2024, 1, 3, tzinfo=dt.UTC),
            max_active_runs=10,
            reverse=False,
            dag_run_conf=None,
            triggering_user_name="airflow-user",
            reprocess_behavior=ReprocessBehavior.COMPLETED,
            run_on_latest_version=True,
        )
        with create_session() as session:
            session.execute(
                update(Backfill)
                .where(Backfill.id == backfill.id)
                .values(created_at=backfill.created_at - age)
                .execution_options(synchronize_session=False)
            )

    def finish_runs() -> None:
        """Every backfill run succeeds: Airflow's timer now sees every backfill as done."""
        with create_session() as session:
            session.execute(
                update(DagRun)
                .where(DagRun.backfill_id.is_not(None), DagRun.state.in_(("queued", "running")))
                .values(state=DagRunState.SUCCESS)
                .execution_options(synchronize_session=False)
            )

    def completed() -> list[str]:
        with create_session() as session:
            return sorted(session.scalars(select(Backfill.dag_id).where(Backfill.completed_at.is_not(None))))

    hold = CompletionHold(fresh_for=options["fresh_for"])
    live = TickClient(options["target"], deadline=30.0)
    dead = TickClient(options["dead_target"], deadline=1.0, failure_threshold=100)
    runner = SidecarSchedulerJobRunner(job=Job(), tick_client=live, completion_hold=hold)
    results: dict[str, Any] = {}

    airflow_backfill("sidecar_it_interval", age=dt.timedelta(hours=1))
    finish_runs()
    # What Airflow's own timer would do now (rolled back): close both backfills.
    with create_session() as session:
        SchedulerJobRunner._mark_backfills_complete(runner, session=session)
        results["airflow_alone"] = sorted(o.dag_id for o in session.dirty if isinstance(o, Backfill))
        session.rollback()

    runner._mark_backfills_complete()
    results["never_ticked"] = completed()

    runner._tick()
    results["materializing"] = sorted(hold.last.materializing) if hold.last else None
    finish_runs()  # the runs the Tick just wrote finish before the timer fires
    runner._mark_backfills_complete()
    results["fresh"] = completed()

    airflow_backfill("sidecar_e2e_three", age=dt.timedelta(hours=1))
    time.sleep(options["fresh_for"] + 0.5)
    runner.tick_client = dead
    runner._tick()  # the sidecar is unreachable: no answer
    finish_runs()
    runner._mark_backfills_complete()
    results["stale"] = completed()

    runner.tick_client = live
    airflow_backfill("sidecar_it_interval", age=dt.timedelta(0))  # the first one is complete
    runner._tick()
    finish_runs()
    runner._mark_backfills_complete()
    results["fresh_again"] = completed()
    with create_session() as session:
        results["young_open"] = session.scalar(
            select(Backfill.completed_at.is_(None)).order_by(Backfill.id.desc()).limit(1)
        )
    live.close()
    dead.close()
    return results


if __name__ == "__main__":
    print("RESULTS " + json.dumps(main(json.loads(sys.argv[1]))))
