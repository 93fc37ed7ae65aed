"""A daily DAG whose one task always fails, for the failed-runs limit (docs/controls.md)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="sidecar_e2e_fails",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 0},
    tags=["sidecar-tests"],
) as dag:
    BashOperator(task_id="fails", bash_command="exit 1")
