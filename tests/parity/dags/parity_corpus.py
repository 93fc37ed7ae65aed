"""The parity corpus: DAGs whose backfill rows the sidecar must write exactly as Airflow 3.3.2 does.

Each DAG exercises a part of the row contract (task attributes that land in
``task_instance``, map indexes, weight rules) or of the timetable maths (each kind of
timetable, with time zones). Their tasks never run: the parity tests only compare the
rows that backfill creation writes. Kept out of ``tests/dags`` so that the other test
modules do not pay for serializing them.
"""

from __future__ import annotations

import datetime as dt
import inspect

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TaskGroup, task, task_group
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference, SyncCallback
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
from airflow.timetables.trigger import (
    CronTriggerTimetable,
    DeltaTriggerTimetable,
    MultipleCronTriggerTimetable,
)

try:  # Airflow 3.2+ (tests/parity/versions.py lists the DAGs an older minor cannot declare)
    from airflow.timetables.trigger import CronPartitionTimetable
except ImportError:
    CronPartitionTimetable = None

START = pendulum.datetime(2024, 1, 1, tz="UTC")
COMMON = {"start_date": START, "catchup": False, "is_paused_upon_creation": False}


class RenamedOperator(EmptyOperator):
    """A custom operator with its own ``custom_operator_name`` (``task_instance.custom_operator_name``)."""

    custom_operator_name = "Renamed!"


# A chain on a preset, with retries, a pool, pool slots and a queue from default_args.
with DAG(
    dag_id="parity_chain",
    schedule="@daily",
    default_args={"retries": 3, "pool": "default_pool", "pool_slots": 2, "queue": "chain_q"},
    **COMMON,
):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b", retries=0)
    c = EmptyOperator(task_id="c", priority_weight=4)
    d = EmptyOperator(task_id="d", queue="other")
    a >> b >> c >> d

# Fan-out / fan-in with all three weight rules, a task-level executor, executor_config,
# display names and custom operator names; a cron data-interval timetable in a DST zone.
with DAG(
    dag_id="parity_fan",
    schedule=CronDataIntervalTimetable("30 2 * * *", timezone="Europe/Amsterdam"),
    **COMMON,
):
    src = EmptyOperator(task_id="src", priority_weight=2, task_display_name="Source ✓")
    branches = [
        EmptyOperator(task_id="up", weight_rule="upstream", priority_weight=5),
        EmptyOperator(task_id="abs", weight_rule="absolute", priority_weight=11),
        EmptyOperator(task_id="down", weight_rule="downstream", executor="LocalExecutor"),
        RenamedOperator(task_id="renamed", executor_config={"cpu": 2, "labels": ["x", "y"]}),
    ]
    sink = EmptyOperator(task_id="sink", weight_rule="upstream", pool_slots=3)
    src >> branches >> sink

# Task groups and mapped tasks: expand, expand_kwargs, an empty literal list, a nested
# mapped group, and upstream-output (XCom) inputs; a cron trigger timetable with an interval.
with DAG(
    dag_id="parity_mapped",
    schedule=CronTriggerTimetable("0 6 * * 1-5", timezone="America/New_York", interval=dt.timedelta(hours=4)),
    default_args={"retries": 1},
    **COMMON,
):

    @task
    def make_list() -> list[int]:
        return [1, 2]

    @task
    def one(x: int) -> int:
        return x

    @task
    def two(x: int, y: str) -> str:
        return f"{x}{y}"

    @task(task_display_name="Consume")
    def consume(x: int) -> int:
        return x

    with TaskGroup("tg") as tg:
        plain = EmptyOperator(task_id="plain")
        lit = one.expand(x=[1, 2, 3])
        prod = two.expand(x=[1, 2], y=["a", "b", "c"])
        kw = two.expand_kwargs([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}])
        empty = one.override(task_id="empty").expand(x=[])
        plain >> [lit, prod, kw, empty]

    @task_group
    def outer(v: int) -> None:
        @task_group
        def inner(w: int) -> None:
            one.override(task_id="leaf")(w)

        inner.expand(w=[10, 20])
        one.override(task_id="mid")(v)

    weighted = one.override(
        task_id="weighted", weight_rule="absolute", priority_weight=9, pool="etl_pool", pool_slots=2
    ).expand(x=[5, 6])
    groups = outer.expand(v=[1, 2, 3])
    upstream = consume.expand(x=make_list())
    partial = two.partial(y="z").expand(x=make_list())
    tg >> weighted >> groups >> upstream >> partial

# depends_on_past on a delta data-interval timetable (sub-daily).
with DAG(
    dag_id="parity_dop",
    schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=8)),
    **COMMON,
):
    first = EmptyOperator(task_id="first", depends_on_past=True)
    second = EmptyOperator(task_id="second")
    first >> second

# Multiple crons in an Asia time zone with a half-hour offset.
with DAG(
    dag_id="parity_multi_cron",
    schedule=MultipleCronTriggerTimetable("0 9 * * *", "30 17 * * *", timezone="Asia/Kolkata"),
    **COMMON,
):
    EmptyOperator(task_id="only")

# A delta trigger timetable with an interval.
with DAG(
    dag_id="parity_delta_trigger",
    schedule=DeltaTriggerTimetable(dt.timedelta(hours=10), interval=dt.timedelta(hours=2)),
    **COMMON,
):
    EmptyOperator(task_id="only")

# Params with a schema: the conf is validated, and stored on new and reprocessed runs.
with DAG(
    dag_id="parity_params",
    schedule="0 12 * * *",
    params={"batch": Param(5, type="integer", minimum=1), "label": Param("x", type="string")},
    **COMMON,
):
    EmptyOperator(task_id="only")

# A versioned bundle is emulated by setting dag.bundle_version by SQL in the test template
# (the dags-folder bundle is unversioned); this one opts out of bundle versioning.
with DAG(
    dag_id="parity_versioned",
    schedule="@hourly",
    **COMMON,
):
    EmptyOperator(task_id="only")

with DAG(
    dag_id="parity_unversioned",
    schedule="@hourly",
    disable_bundle_versioning=True,
    **COMMON,
):
    EmptyOperator(task_id="only")

# Presets in the start date's time zone: month ends across a leap February, and a leap
# day that only leap years have.
SAO_PAULO = pendulum.datetime(2020, 1, 1, tz="America/Sao_Paulo")
with DAG(
    dag_id="parity_monthly",
    schedule="@monthly",
    start_date=SAO_PAULO,
    catchup=False,
    is_paused_upon_creation=False,
):
    EmptyOperator(task_id="only")

with DAG(
    dag_id="parity_leap_day",
    schedule=CronDataIntervalTimetable("0 0 29 2 *", timezone="Pacific/Auckland"),
    **COMMON,
):
    EmptyOperator(task_id="only")

# Partitioned DAGs (3.2 and newer; the sidecar writes them as 3.3 does and refuses them on
# 3.2 by name): daily partitions in a zone ahead of UTC with a day key, and hourly ones
# across a DST change with Airflow's default key format.
if CronPartitionTimetable is not None:
    with DAG(
        dag_id="parity_partitioned",
        schedule=CronPartitionTimetable("0 0 * * *", timezone="Asia/Taipei", key_format="%Y-%m-%d"),
        **COMMON,
    ):
        EmptyOperator(task_id="extract") >> EmptyOperator(task_id="load", retries=2)
    with DAG(
        dag_id="parity_partitioned_hourly",
        schedule=CronPartitionTimetable("0 * * * *", timezone="Europe/Amsterdam", run_offset=1),
        **COMMON,
    ):
        EmptyOperator(task_id="only")

# Refused by the sidecar (FAILED_PRECONDITION naming the feature), accepted by Airflow:
# deadline alerts (Airflow writes ``deadline`` rows with callbacks for each run; the
# sidecar does not reproduce them).


def notify(**kwargs: object) -> None:
    """A deadline callback (never called: the tests do not run the scheduler)."""


try:
    DEADLINE = DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(hours=1),
        callback=SyncCallback(notify),
    )
except ValueError:  # Airflow 3.1: "Callbacks of type SyncCallback are not currently supported"
    DEADLINE = None
if DEADLINE is not None:
    with DAG(dag_id="parity_deadline", schedule="@daily", deadline=DEADLINE, **COMMON):
        EmptyOperator(task_id="only")

# Reprocessing is refused: Airflow clears its runs on their own versions.
if "rerun_with_latest_version" in inspect.signature(DAG).parameters:  # Airflow 3.3+
    with DAG(dag_id="parity_pinned_version", schedule="@daily", rerun_with_latest_version=False, **COMMON):
        EmptyOperator(task_id="only")

# Refused: not periodic, and no backfill runs allowed.
with DAG(dag_id="parity_manual", schedule=None, **COMMON):
    EmptyOperator(task_id="only")

if "allowed_run_types" in inspect.signature(DAG).parameters:  # Airflow 3.2+
    with DAG(
        dag_id="parity_no_backfill",
        schedule="@daily",
        allowed_run_types=["scheduled", "manual"],
        **COMMON,
    ):
        EmptyOperator(task_id="only")
