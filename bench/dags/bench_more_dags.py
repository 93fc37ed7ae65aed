"""More DAGs the benchmarks use: an irregular cron in a DST zone (script C), a catchup twin of
``bench_daily_10`` (script D's like-for-like baseline) and a one-task DAG whose task the
executor runs (script G, makespan)."""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, chain, task

# Weekdays at 09:30 in Amsterdam: neither evenly spaced nor countable from the expression.
with DAG(
    dag_id="bench_weekdays_amsterdam",
    schedule="30 9 * * 1-5",
    start_date=pendulum.datetime(2020, 1, 1, tz="Europe/Amsterdam"),
    catchup=False,
) as bench_weekdays_amsterdam:
    chain(*[EmptyOperator(task_id=f"t{i:02d}") for i in range(10)])

# bench_daily_10 with catchup from 1900: the scheduler keeps 10 regular runs in flight itself.
with DAG(
    dag_id="bench_daily_10_catchup",
    schedule="@daily",
    start_date=dt.datetime(1900, 1, 1),
    catchup=True,
    max_active_runs=10,
) as bench_daily_10_catchup:
    chain(*[EmptyOperator(task_id=f"t{i:02d}") for i in range(10)])

with DAG(
    dag_id="bench_makespan_1",
    schedule="@daily",
    start_date=dt.datetime(2020, 1, 1),
    catchup=False,
) as bench_makespan_1:

    @task
    def noop() -> None:
        """Nothing: the executor's cost of one task, not the task's."""

    noop()
