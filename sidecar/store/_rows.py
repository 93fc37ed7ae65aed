"""Building Airflow's rows for a batch of planned runs, exactly as Airflow 3.3 writes them.

Pure functions: the values of ``dag_run``, ``task_instance`` and ``backfill_dag_run``
rows, so that the unmodified scheduler runs them. The contract is what Airflow's own
creation writes: ``DAG.create_dagrun`` for the run (state queued, no start date, a fresh
trace carrier, the triggering DAG version) and ``DagRun._create_tasks`` through
``TaskInstance.insert_mapping`` for its task instances (state NULL, try_number 0). The
row diff of docs/adr/0003-parity.md (``tests/parity/test_row_diff.py``) checks every
column against Airflow 3.3.2's.
"""

from __future__ import annotations

import datetime as dt
import getpass
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import uuid6

from sidecar.catalog import DagTemplate
from sidecar.planning import PlannedRun

# Airflow stores the DagRunTriggeredByType enum *name*, and run_type its value.
RUN_TYPE_BACKFILL = "backfill"
TRIGGERED_BY_BACKFILL = "BACKFILL"
SPAN_NOT_STARTED = "not_started"


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


#: ``task_instance.unixname``: the OS user of the creating process, as Airflow records it.
UNIXNAME = _os_user()


@dataclass(frozen=True)
class RunContext:
    """What every row of one backfill shares."""

    backfill_id: int
    dag: DagTemplate
    dag_version_id: uuid.UUID
    bundle_version: str | None
    log_template_id: int | None
    conf: dict[str, Any]
    triggering_user_name: str | None


def new_context_carrier() -> dict[str, Any]:
    """A W3C trace carrier in Airflow's extended-JSON form, as written with tracing off."""
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    return {"__var": {"traceparent": traceparent}, "__type": "dict"}


def dag_run_row(ctx: RunContext, run: PlannedRun, now: dt.datetime) -> dict[str, Any]:
    """The ``dag_run`` row of a new backfill run (state queued, no start date).

    A partition's run has no logical date nor data interval; its ``run_after`` is its
    partition date (``_create_backfill_dag_run_partitioned``).
    """
    info = run.info
    dated = not info.partitioned
    return {
        "dag_id": ctx.dag.dag_id,
        "queued_at": now,
        "logical_date": info.logical_date if dated else None,
        "start_date": None,
        "end_date": None,
        "state": "queued",
        "run_id": run.run_id,
        "creating_job_id": None,
        "run_type": RUN_TYPE_BACKFILL,
        "triggered_by": TRIGGERED_BY_BACKFILL,
        "triggering_user_name": ctx.triggering_user_name,
        "conf": ctx.conf,
        "data_interval_start": info.data_interval_start if dated else None,
        "data_interval_end": info.data_interval_end if dated else None,
        "run_after": info.run_after,
        "last_scheduling_decision": None,
        "log_template_id": ctx.log_template_id,
        "created_at": now,
        "updated_at": now,
        "clear_number": 0,
        "backfill_id": ctx.backfill_id,
        "bundle_version": ctx.bundle_version,
        "scheduled_by_job_id": None,
        "context_carrier": new_context_carrier(),
        "span_status": SPAN_NOT_STARTED,
        "created_dag_version_id": ctx.dag_version_id,
        "partition_key": info.partition_key,
        "partition_date": info.partition_date,
    }


def task_instance_rows(
    ctx: RunContext, run_id: str, carrier: dict[str, Any], now: dt.datetime
) -> list[dict[str, Any]]:
    """The ``task_instance`` rows of one new run: one per task and map index, state NULL."""
    rows: list[dict[str, Any]] = []
    for task in ctx.dag.tasks:
        for map_index in task.map_indexes:
            rows.append(
                {
                    "id": uuid6.uuid7(),
                    "task_id": task.task_id,
                    "dag_id": ctx.dag.dag_id,
                    "run_id": run_id,
                    "map_index": map_index,
                    "try_number": 0,
                    "max_tries": task.max_tries,
                    "hostname": "",
                    "unixname": UNIXNAME,
                    "pool": task.pool,
                    "pool_slots": task.pool_slots,
                    "queue": task.queue,
                    "priority_weight": task.priority_weight,
                    "operator": task.operator,
                    "custom_operator_name": task.custom_operator_name,
                    "executor": task.executor,
                    "executor_config": task.executor_config,
                    "updated_at": now,
                    "context_carrier": carrier,
                    "span_status": SPAN_NOT_STARTED,
                    "task_display_name": task.task_display_name,
                    "dag_version_id": ctx.dag_version_id,
                }
            )
    return rows
