"""Airflow 3.3.2 as the oracle: run a list of operations with Airflow's own code, print the results.

Run as a script in a subprocess whose environment points Airflow at one metadata database
(Airflow's ORM configuration is process-global, so each database gets its own process)::

    python tests/parity/airflow_oracle.py < ops.json

The input is a JSON list of operations; the output's last line is ``RESULTS <json>``, one
result per operation. Operations:

* ``{"op": "arrange", "dag_id", "from_date", "to_date", "index", "state"}``: create the
  ``index``-th run the timetable has in the range, as a scheduled run made by Airflow's
  own ``create_dagrun`` (so its rows are exactly Airflow's), then put the run
  and its task instances into ``state`` with fixed dates and ``try_number`` 1, as if it
  had run. Used on both databases so their pre-existing runs are identical.
* ``{"op": "backfill", "dag_id", "from_date", "to_date", "max_active_runs", "reverse",
  "dag_run_conf", "reprocess_behavior", "triggering_user_name", "discard",
  "run_on_latest_version"}``: call
  ``airflow.models.backfill._create_backfill``. The result is ``{"backfill_id": id}`` or
  ``{"error": [exception class name, message]}``. With ``discard`` the backfill's rows
  are deleted afterwards (for requests Airflow wrongly accepts).
* ``{"op": "mutation_hook"}``: what the shim reports about Airflow's default
  ``task_instance_mutation_hook`` (``{"hook": ""}`` when it is the no-op).
* ``{"op": "complete", "dag_id"}``: mark the DAG's active backfills completed, so that
  the next case of the same DAG is not refused as "another backfill is running".
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

#: Fixed dates stamped on arranged runs: identical in both databases.
ARRANGED_START = dt.datetime(2024, 6, 1, 0, 0, tzinfo=dt.UTC)
ARRANGED_END = dt.datetime(2024, 6, 1, 0, 5, tzinfo=dt.UTC)


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _arrange(op: dict[str, Any]) -> dict[str, Any]:
    from airflow.models import DagRun, TaskInstance
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select, update

    with create_session() as session:
        dag = session.scalar(SerializedDagModel.latest_item_select_object(op["dag_id"])).dag
        # The timetable's own run, as the scheduler would have made it.
        infos = list(dag.iter_dagrun_infos_between(_parse(op["from_date"]), _parse(op["to_date"])))
        info = infos[op["index"]]
        run_id = DagRun.generate_run_id(
            run_type=DagRunType.SCHEDULED, logical_date=info.logical_date, run_after=info.run_after
        )
        partition: dict[str, Any] = {}
        if getattr(info, "partition_key", None):  # 3.2+: a partition's run, with a fixed id
            run_id = f"scheduled__{info.run_after.isoformat()}__{info.partition_key}"
            partition = {"partition_key": info.partition_key, "partition_date": info.partition_date}
        run = dag.create_dagrun(
            run_id=run_id,
            logical_date=info.logical_date,
            **partition,
            data_interval=info.data_interval,
            run_after=info.run_after,
            conf={"arranged": True},
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            triggering_user_name="scheduler-user",
            state=DagRunState.QUEUED,
            session=session,
        )
        session.flush()
        state = op["state"]
        finished = state in ("success", "failed")
        ti_ids = list(
            session.scalars(
                select(TaskInstance.id)
                .where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
                .order_by(TaskInstance.task_id, TaskInstance.map_index)
            )
        )
        for index, ti_id in enumerate(ti_ids):
            if state == "success":
                ti_state = "success"
            elif state == "failed":  # the last one never ran: archived as a failed try 0
                last = index == len(ti_ids) - 1 and index > 0
                ti_state = "failed" if index == 0 else None if last else "upstream_failed"
            elif state == "running":
                ti_state = "running" if index == 0 else None
            else:
                ti_state = None
            values: dict[str, Any] = {"state": ti_state}
            if ti_state is not None:
                values |= {"try_number": 1, "start_date": ARRANGED_START, "hostname": "worker-1"}
                if ti_state != "running":
                    values["end_date"] = ARRANGED_END
            session.execute(update(TaskInstance).where(TaskInstance.id == ti_id).values(**values))
        run_values: dict[str, Any] = {"state": state}
        if state != "queued":
            run_values["start_date"] = ARRANGED_START
        if finished:
            run_values["end_date"] = ARRANGED_END
        session.execute(update(DagRun).where(DagRun.id == run.id).values(**run_values))
    return {"dag_run_id": run.id}


def _run_on_latest_version(op: dict[str, Any]) -> bool:
    """The value Airflow's API and CLI pass to ``_create_backfill`` for the request's.

    3.3 resolves an unset one (``resolve_run_on_latest_version(..., fallback=True)`` in
    api_fastapi/common/dagbag.py: the DAG's, then ``[core]``'s, then True); 3.1 and 3.2's
    request body and CLI default to True.
    """
    requested = op.get("run_on_latest_version")
    try:
        from airflow.api_fastapi.common.dagbag import resolve_run_on_latest_version
    except ImportError:
        return True if requested is None else bool(requested)
    from airflow.utils.session import create_session

    with create_session() as session:
        return resolve_run_on_latest_version(requested, op["dag_id"], session, fallback=True)


def _backfill(op: dict[str, Any]) -> dict[str, Any]:
    from airflow.models import DagRun
    from airflow.models.backfill import Backfill, BackfillDagRun, ReprocessBehavior, _create_backfill
    from airflow.utils.session import create_session
    from sqlalchemy import delete, func, select, text

    behavior = op.get("reprocess_behavior")
    try:
        backfill = _create_backfill(
            dag_id=op["dag_id"],
            from_date=_parse(op["from_date"]),
            to_date=_parse(op["to_date"]),
            max_active_runs=op.get("max_active_runs", 10),
            reverse=op.get("reverse", False),
            dag_run_conf=op.get("dag_run_conf"),
            triggering_user_name=op.get("triggering_user_name"),
            reprocess_behavior=ReprocessBehavior(behavior) if behavior else None,
            run_on_latest_version=_run_on_latest_version(op),
        )
    except Exception as exc:  # the oracle reports every refusal, whatever its type
        return {"error": [type(exc).__name__, str(exc)]}
    with create_session() as session:  # 3.1 creates a backfill of no runs for an empty range
        runs = session.scalar(
            select(func.count()).select_from(BackfillDagRun).where(BackfillDagRun.backfill_id == backfill.id)
        )
    if op.get("discard"):
        with create_session() as session:
            session.execute(delete(BackfillDagRun).where(BackfillDagRun.backfill_id == backfill.id))
            session.execute(  # deadline alerts' rows (and their callbacks) go with the runs
                text(
                    "DELETE FROM deadline WHERE dagrun_id IN (SELECT id FROM dag_run WHERE backfill_id = :b)"
                ),
                {"b": backfill.id},
            )
            session.execute(delete(DagRun).where(DagRun.backfill_id == backfill.id))
            session.execute(delete(Backfill).where(Backfill.id == backfill.id))
    return {"backfill_id": backfill.id, "runs": runs}


def _complete(op: dict[str, Any]) -> dict[str, Any]:
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from sqlalchemy import func, update

    with create_session() as session:
        result = session.execute(
            update(Backfill)
            .where(Backfill.dag_id == op["dag_id"], Backfill.completed_at.is_(None))
            .values(completed_at=func.now())
        )
        return {"completed": result.rowcount}


def _mutation_hook(op: dict[str, Any]) -> dict[str, Any]:
    from airflow import settings  # noqa: F401  (loaded, as in the scheduler)

    from airflow_shim._policies import mutation_hook_name

    return {"hook": mutation_hook_name()}


OPERATIONS = {
    "arrange": _arrange,
    "backfill": _backfill,
    "complete": _complete,
    "mutation_hook": _mutation_hook,
}


def main() -> None:
    """Read the operations from stdin, run them in order, print ``RESULTS <json>``."""
    ops = json.load(sys.stdin)
    results = [OPERATIONS[op["op"]](op) for op in ops]
    sys.stdout.write("RESULTS " + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
