"""A partitioned DAG for the integration tests (Airflow 3.2 and newer declare it)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

try:
    from airflow.timetables.trigger import CronPartitionTimetable
except ImportError:  # Airflow 3.1: no partitioned timetables
    CronPartitionTimetable = None

if CronPartitionTimetable is not None:
    # One partition a day in New York, keyed by its day.
    with DAG(
        dag_id="sidecar_it_partitioned",
        schedule=CronPartitionTimetable("0 0 * * *", timezone="America/New_York", key_format="%Y-%m-%d"),
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        is_paused_upon_creation=False,
    ) as partitioned_dag:
        EmptyOperator(task_id="extract") >> EmptyOperator(task_id="load")
