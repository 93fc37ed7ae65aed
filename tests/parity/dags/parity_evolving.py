"""A DAG that changes after some of its runs ran: reprocessing them runs on the latest version.

The parity template serializes version 1; the tests then arrange finished runs of it and
reserialize with ``PARITY_DAG_VERSION=2`` (a new ``dag_version``, since task instances now
reference the first). Version 2 drops task ``c``, adds task ``d``, shortens the literal
mapping and changes retries and pool slots: a reprocess clear must mark ``c`` and map index
2 ``removed``, add ``d``, refresh the others and move the run to version 2, as Airflow's
``clear_task_instances`` + ``verify_integrity`` do with ``run_on_latest_version``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task

V2 = os.environ.get("PARITY_DAG_VERSION") == "2"

with DAG(
    dag_id="parity_evolving",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 2 if V2 else 1},
):

    @task
    def mapped(x: int) -> int:
        return x

    first = EmptyOperator(task_id="a", pool_slots=2 if V2 else 1)
    fan = mapped.expand(x=[1, 2] if V2 else [1, 2, 3])
    last = EmptyOperator(task_id="d") if V2 else EmptyOperator(task_id="c")
    first >> fan >> last
