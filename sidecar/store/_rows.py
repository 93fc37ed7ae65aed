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
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sidecar.catalog import DagTemplate
from sidecar.planning import PlannedRun

# Airflow stores the DagRunTriggeredByType enum *name*, and run_type its value.
RUN_TYPE_BACKFILL = "backfill"
TRIGGERED_BY_BACKFILL = "BACKFILL"
SPAN_NOT_STARTED = "not_started"
#: Task instances of tasks outside a backfill's task subset. ``removed``: the scheduler neither
#: runs nor re-creates them, ``update_state`` leaves them out of the run's state, and the
#: trigger rules that subtract removed upstreams let a selected downstream run
#: (docs/controls.md, "Task subsets").
EXCLUDED_TASK_STATE = "removed"


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
    run_on_latest_version: bool = True
    """Reprocessed runs move to ``dag_version_id`` (True) or are cleared on their own versions."""
    selected_task_ids: frozenset[str] | None = None
    """A task subset: the other tasks' instances are written ``removed``; None: every task runs."""

    def state_of(self, task_id: str) -> str | None:
        """A new task instance's state: NULL (the scheduler's to run), or ``removed`` outside the subset."""
        if self.selected_task_ids is None or task_id in self.selected_task_ids:
            return None
        return EXCLUDED_TASK_STATE


def dag_run_row(
    ctx: RunContext, run: PlannedRun, now: dt.datetime, carrier: dict[str, Any]
) -> dict[str, Any]:
    """The ``dag_run`` row of a new backfill run (state queued, no start date; ``carrier``:
    its trace carrier, ``AirflowRowContract.run_carrier``).

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
        "context_carrier": carrier,
        "span_status": SPAN_NOT_STARTED,
        "created_dag_version_id": ctx.dag_version_id,
        "partition_key": info.partition_key,
        "partition_date": info.partition_date,
    }


_RAND_B_BITS = 62
_RAND_B_MASK = (1 << _RAND_B_BITS) - 1
_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62


def uuid7_bytes(count: int) -> list[bytes]:
    """``count`` new UUIDv7 ids (RFC 9562) as 16 bytes each, strictly increasing, from one clock read and one random draw.

    The 74 bits after the 48-bit millisecond timestamp (``rand_a``, then ``rand_b`` past
    the variant) hold a counter (RFC 9562 section 6.2, method 2, "monotonic random"): it
    starts at a random 73-bit value and grows by a random 1 to 65,536 per id, so the ids of
    one call are unique and sorted, and those of later calls (a later millisecond) sort
    after them. About five times cheaper than ``uuid6.uuid7()`` per id (one ``os.urandom``
    each); the bulk path sends them to ``COPY`` as hex text, which the driver passes
    through and the server parses (no UUID object per id for the collector to track).
    """
    if count <= 0:
        return []
    draw = os.urandom(10 + 2 * count)
    stamp = (time.time_ns() // 1_000_000) << 80 | _VERSION_7 | _VARIANT
    counter = int.from_bytes(draw[:10]) >> 7  # 73 bits: the steps (< 2**32 in all) cannot overflow 74
    ids: list[bytes] = []
    append = ids.append
    for step in memoryview(draw)[10:].cast("H"):
        counter += step + 1
        append((stamp | (counter >> _RAND_B_BITS) << 64 | (counter & _RAND_B_MASK)).to_bytes(16))
    return ids


def uuid7s(count: int) -> list[uuid.UUID]:
    """``count`` new UUIDv7 ids, strictly increasing (:func:`uuid7_bytes`)."""
    return [uuid.UUID(bytes=value) for value in uuid7_bytes(count)]


def task_instance_bases(ctx: RunContext, now: dt.datetime) -> list[dict[str, Any]]:
    """What the ``task_instance`` rows of every new run share: one per task and map index.

    A run's rows are these plus its own ``id`` (a uuid7 each), ``run_id`` and
    ``context_carrier`` (the run's carrier): :func:`task_instance_rows` builds them as
    dicts, the bulk path (:mod:`sidecar.store._bulk`) as ``COPY`` tuples.
    """
    bases: list[dict[str, Any]] = []
    for task in ctx.dag.tasks:
        for map_index in task.map_indexes:
            bases.append(
                {
                    "task_id": task.task_id,
                    "dag_id": ctx.dag.dag_id,
                    "map_index": map_index,
                    "state": ctx.state_of(task.task_id),
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
                    "span_status": SPAN_NOT_STARTED,
                    "task_display_name": task.task_display_name,
                    "dag_version_id": ctx.dag_version_id,
                }
            )
    return bases


def task_instance_rows(
    ctx: RunContext, run_id: str, carrier: dict[str, Any] | str | None, now: dt.datetime
) -> list[dict[str, Any]]:
    """The ``task_instance`` rows of one new run: one per task and map index, state NULL (or ``removed``).

    ``carrier``: the run's context carrier, or that carrier already serialised (the bulk
    path's ``JsonText``, shared with its run's row).
    """
    bases = task_instance_bases(ctx, now)
    return [
        {"id": id_, "run_id": run_id, "context_carrier": carrier, **base}
        for id_, base in zip(uuid7s(len(bases)), bases, strict=True)
    ]
