"""DAGs the benchmarks backfill: 10 and 50 chained tasks, daily and hourly, in UTC (and one hourly DAG
in a time zone with daylight saving, whose runs are not evenly spaced in UTC)."""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, chain


def _chained(dag_id: str, schedule: str, tasks: int, start: dt.datetime = dt.datetime(2020, 1, 1)) -> DAG:
    with DAG(dag_id=dag_id, schedule=schedule, start_date=start, catchup=False) as dag:
        chain(*[EmptyOperator(task_id=f"t{i:02d}") for i in range(tasks)])
    return dag


bench_daily_10 = _chained("bench_daily_10", "@daily", 10)
bench_daily_50 = _chained("bench_daily_50", "@daily", 50)
bench_hourly_10 = _chained("bench_hourly_10", "@hourly", 10)
bench_hourly_10_amsterdam = _chained(
    "bench_hourly_10_amsterdam", "0 * * * *", 10, pendulum.datetime(2020, 1, 1, tz="Europe/Amsterdam")
)
