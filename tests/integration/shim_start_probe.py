"""Run the shim's ``_start_queued_dagruns`` once against a real Airflow 3.3.2 database.

Run as a script in a subprocess whose environment points Airflow at one metadata database
(Airflow's ORM configuration is process-global)::

    python tests/integration/shim_start_probe.py '{"cap": 3}'

It builds ``SidecarSchedulerJobRunner`` (Airflow's real ``SchedulerJobRunner`` underneath),
sets its cap on running backfill runs (``null``: none), lets it start queued runs once and
commits, as one scheduler loop would. The last line is ``RESULTS <json>``: the backfill
runs now running, as ``[backfill_id, sort_ordinal]`` pairs. With ``{"airflow_create": dag_id}``
it asks Airflow's own ``_create_backfill`` instead, and answers what it raised.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def airflow_refusal(dag_id: str) -> str:
    """What Airflow's own create answers for ``dag_id`` (its single-backfill check), as a class name."""
    import datetime as dt

    from airflow.models.backfill import _create_backfill

    try:
        _create_backfill(
            dag_id=dag_id,
            from_date=dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
            to_date=dt.datetime(2024, 6, 2, tzinfo=dt.UTC),
            max_active_runs=1,
            reverse=False,
            dag_run_conf=None,
            triggering_user_name="airflow-user",
        )
    except Exception as exc:
        return type(exc).__name__
    return "created"


def main(options: dict[str, Any]) -> dict[str, Any]:
    if options.get("airflow_create"):
        return {"airflow_create": airflow_refusal(options["airflow_create"])}
    from airflow.jobs.job import Job
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    from airflow_shim.client import TickClient
    from airflow_shim.runner import SidecarSchedulerJobRunner

    runner = SidecarSchedulerJobRunner(job=Job(), tick_client=TickClient("127.0.0.1:9", deadline=0.5))
    runner.backfill_cap = options["cap"]
    with create_session() as session:
        runner._start_queued_dagruns(session)
    with create_session() as session:
        rows = session.execute(
            select(DagRun.backfill_id, BackfillDagRun.sort_ordinal)
            .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
            .where(DagRun.state == DagRunState.RUNNING)
            .order_by(DagRun.backfill_id, BackfillDagRun.sort_ordinal)
        )
        return {"running": [[int(b), int(o)] for b, o in rows]}


if __name__ == "__main__":
    print("RESULTS " + json.dumps(main(json.loads(sys.argv[1]))))
