"""The demo's sample DAG: three daily tasks in Amsterdam time.

A non-UTC time zone on purpose: the sidecar must compute the same logical dates, data
intervals and run ids as Airflow across time zones (and DST changes), so the demo shows it
on a real schedule. Each task sleeps about a second so the progress is visible with
``--watch``.
"""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import DAG, task


@task
def extract(ds: str | None = None) -> str:
    """Pretend to fetch the day's data."""
    time.sleep(1)
    return f"rows for {ds}"


@task
def transform(rows: str) -> str:
    """Pretend to clean it."""
    time.sleep(1)
    return rows.upper()


@task
def load(rows: str) -> None:
    """Pretend to store it."""
    time.sleep(1)
    print(f"loaded: {rows}")


with DAG(
    dag_id="sample_daily",
    schedule="0 6 * * *",
    start_date=pendulum.datetime(2025, 3, 1, tz="Europe/Amsterdam"),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["airflow-sidecar-demo"],
) as dag:
    load(transform(extract()))
