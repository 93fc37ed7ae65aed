"""DAGs the integration tests backfill: each one exercises one rule of Airflow's backfill path.

They never run tasks (the integration tests only check rows), so their tasks are empty
operators; what matters is their schedule, parameters and task attributes.
"""

from __future__ import annotations

import datetime as dt
import inspect

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

START = pendulum.datetime(2024, 1, 1, tz="UTC")

# A cron data-interval timetable in a DST time zone, with a mapped task and retries.
with DAG(
    dag_id="sidecar_it_interval",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="Europe/Amsterdam"),
    start_date=START,
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 2, "pool_slots": 1},
) as interval_dag:

    @task
    def fan(x: int) -> int:
        return x

    begin = EmptyOperator(task_id="begin", priority_weight=3)
    mapped = fan.expand(x=[1, 2, 3])
    end = EmptyOperator(task_id="end", weight_rule="absolute", priority_weight=7, queue="q2")
    begin >> mapped >> end

# depends_on_past: Airflow refuses run_backwards and reprocess "none" for it.
with DAG(
    dag_id="sidecar_it_depends_on_past",
    schedule=dt.timedelta(hours=12),
    start_date=START,
    catchup=False,
    is_paused_upon_creation=False,
) as dop_dag:
    EmptyOperator(task_id="only", depends_on_past=True)

# params with a schema: the backfill's conf is validated against them.
with DAG(
    dag_id="sidecar_it_params",
    schedule="@daily",
    start_date=START,
    catchup=False,
    is_paused_upon_creation=False,
    params={"batch": Param(5, type="integer", minimum=1), "label": Param("x", type="string")},
) as params_dag:
    EmptyOperator(task_id="only")

# Not periodic: Airflow refuses to backfill it.
with DAG(
    dag_id="sidecar_it_manual",
    schedule=None,
    start_date=START,
    catchup=False,
    is_paused_upon_creation=False,
) as manual_dag:
    EmptyOperator(task_id="only")

# Allows no backfill runs (Airflow 3.2+: 3.1 has no allowed_run_types).
if "allowed_run_types" in inspect.signature(DAG).parameters:
    with DAG(
        dag_id="sidecar_it_no_backfill",
        schedule="@daily",
        start_date=START,
        catchup=False,
        is_paused_upon_creation=False,
        allowed_run_types=["scheduled", "manual"],
    ) as no_backfill_dag:
        EmptyOperator(task_id="only")

# An hourly cron in a DST zone: its plans cannot be counted arithmetically and cost about
# half a millisecond a slot to step, the worst case for planning (tests/security/test_bounded_*).
with DAG(
    dag_id="sidecar_it_hourly_dst",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="Europe/Amsterdam"),
    start_date=START,
    catchup=False,
    is_paused_upon_creation=False,
) as hourly_dst_dag:
    EmptyOperator(task_id="only")

# The same hourly cron in UTC: evenly spaced, so its plans are counted arithmetically however
# long (a century of it answers a dry run at once; tests/security/test_bounded_planning.py).
with DAG(
    dag_id="sidecar_it_hourly_utc",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START,
    catchup=False,
    is_paused_upon_creation=False,
) as hourly_utc_dag:
    EmptyOperator(task_id="only")
