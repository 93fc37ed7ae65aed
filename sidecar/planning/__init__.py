"""Pure backfill planning: Airflow 3.3.2 timetables rebuilt from their serialized form.

No I/O and no Airflow import: given ``serialized_dag.data["dag"]["timetable"]`` and a
date range, this package yields exactly the runs Airflow's backfill would create,
forwards or backwards, lazily and resumably.
"""

from sidecar.planning._bounds import runs_upper_bound
from sidecar.planning._budget import Allowance, StopFlag, lowest_priority, serve_jobs
from sidecar.planning._jobs import EXACT_COUNT_BUDGET, first_sizes, full_count, pending_runs, plan_slots
from sidecar.planning._model import DagRunInfo, Timetable, run_id_for, utc_offset_seconds, with_offset
from sidecar.planning._parse import non_periodic_message, parse_timetable
from sidecar.planning._partition import CronPartitionTimetable
from sidecar.planning._plan import BackfillPlan, PlannedRun, validate_range
from sidecar.planning._summary import PlanCounts, count_plan, plan_window

__all__ = [
    "EXACT_COUNT_BUDGET",
    "Allowance",
    "BackfillPlan",
    "CronPartitionTimetable",
    "DagRunInfo",
    "PlanCounts",
    "PlannedRun",
    "StopFlag",
    "Timetable",
    "count_plan",
    "first_sizes",
    "full_count",
    "lowest_priority",
    "non_periodic_message",
    "parse_timetable",
    "pending_runs",
    "plan_slots",
    "plan_window",
    "run_id_for",
    "runs_upper_bound",
    "serve_jobs",
    "utc_offset_seconds",
    "validate_range",
    "with_offset",
]
