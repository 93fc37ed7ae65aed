"""A three-task daily DAG that the integration and end-to-end tests backfill.

Kept tiny and fast on purpose: three ``echo`` tasks in a chain, so that a five-day
backfill finishes in seconds and the tests measure the harness, not the tasks.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="sidecar_e2e_three",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["sidecar-tests"],
) as dag:
    first = BashOperator(task_id="first", bash_command="echo first {{ ds }}")
    second = BashOperator(task_id="second", bash_command="echo second {{ ds }}")
    third = BashOperator(task_id="third", bash_command="echo third {{ ds }}")
    first >> second >> third
