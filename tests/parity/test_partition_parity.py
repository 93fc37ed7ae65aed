"""Parity of partitioned plans with Airflow 3.3.2 (Airflow is the oracle), and key ranges.

``CronPartitionTimetable`` DAGs are built in-process and serialized by Airflow; the stored
timetable is planned by ``sidecar.planning`` and compared with Airflow's own
``_get_info_list`` (partition keys, partition dates, ``run_after``, no logical date, no
cut-off at now, forwards and backwards) and ``generate_run_id``. Partition ranges given as
keys (beyond Airflow) must give the plan of the dates they stand for.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from typing import Any

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("airflow")

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))

from hypothesis import given
from hypothesis import strategies as st

from sidecar.errors import InvalidArgument
from sidecar.planning import BackfillPlan, CronPartitionTimetable, parse_timetable
from tests.parity.airflow_compat import DagSerialization
from tests.parity.test_planning_parity import ZONES, cron_exprs, examples, expression_max_days, ranges
from tests.parity.versions import AIRFLOW_MINOR

pytestmark = pytest.mark.skipif(
    AIRFLOW_MINOR != "3.3", reason="3.3's partition rules (3.2 is refused by name)"
)

UTC = dt.UTC
KEY_FORMATS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d", "%Y%m%d%H%M", "%Y-%m-%d %H:%M %Z", "%d/%m/%Y %H:%M"]


def serialize(expr: str, zone: str, key_format: str, run_offset: int) -> tuple[dict[str, Any], Any]:
    from airflow.sdk import DAG
    from airflow.timetables.trigger import CronPartitionTimetable as AirflowPartitions

    schedule = AirflowPartitions(expr, timezone=zone, key_format=key_format, run_offset=run_offset)
    data = DagSerialization.to_dict(DAG("parity_partitions", schedule=schedule))
    return data["dag"]["timetable"], DagSerialization.from_dict(data)


def airflow_plan(sdag: Any, lo: dt.datetime, hi: dt.datetime, reverse: bool) -> list[tuple[Any, ...]]:
    from airflow.models.backfill import _get_info_list

    infos = _get_info_list(from_date=lo, to_date=hi, reverse=reverse, dag=sdag)
    return [(i.logical_date, i.data_interval, i.partition_key, i.partition_date, i.run_after) for i in infos]


def sidecar_plan(plan: BackfillPlan) -> list[tuple[Any, ...]]:
    rows = []
    for run in plan.runs():
        info = run.info
        assert info.partitioned and info.logical_date == info.partition_date == info.run_after
        rows.append((None, None, info.partition_key, info.partition_date, info.run_after))
    return rows


def run_id_form(run_id: str) -> str:
    """A partition's run id with its random suffix (8 letters or digits) replaced."""
    head, sep, suffix = run_id.rpartition("__")
    assert sep and re.fullmatch(r"[A-Za-z0-9]{8}", suffix), run_id
    return head + "__<random>"


@examples(200)
@given(
    expr=cron_exprs(),
    zone=st.sampled_from(ZONES),
    key_format=st.sampled_from(KEY_FORMATS),
    run_offset=st.sampled_from([0, 0, 1, -1]),
    data=st.data(),
    pick=st.integers(0, 10**6),
)
def test_partition_plans_match_airflow(
    expr: str, zone: str, key_format: str, run_offset: int, data: st.DataObject, pick: int
) -> None:
    encoded, sdag = serialize(expr, zone, key_format, run_offset)
    timetable = parse_timetable(encoded, dag_id="parity_partitions")
    assert timetable.partitioned and timetable.summary == sdag.timetable.summary
    lo, hi = data.draw(ranges(expression_max_days(expr)))
    # "now" inside the range: Airflow keeps partitions after it (no cut-off), so must the plan.
    now = lo + (hi - lo) / 2
    for reverse in (False, True):
        plan = BackfillPlan(timetable, lo, hi, reverse, now)
        expected = airflow_plan(sdag, lo, hi, reverse)
        assert sidecar_plan(plan) == expected
        runs = list(plan.runs())
        assert [r.sort_ordinal for r in runs] == list(range(1, len(runs) + 1))
        if runs:
            k = pick % len(runs)
            resumed = list(plan.runs(after=runs[k]))
            assert [r.info for r in resumed] == [r.info for r in runs[k + 1 :]]
            info = runs[k].info
            airflow_id = sdag.timetable.generate_run_id(
                run_type=_backfill_type(),
                run_after=_pendulum(info.run_after),
                data_interval=None,
                partition_key=info.partition_key,
            )
            assert run_id_form(runs[k].run_id) == run_id_form(airflow_id)


@examples(150)
@given(
    expr=cron_exprs(),
    zone=st.sampled_from(ZONES),
    key_format=st.sampled_from(KEY_FORMATS),
    data=st.data(),
    picks=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
)
def test_key_ranges_give_the_plan_of_their_dates(
    expr: str, zone: str, key_format: str, data: st.DataObject, picks: tuple[int, int]
) -> None:
    """A key range is the range of its dates; keys that name no single partition are refused."""
    encoded, sdag = serialize(expr, zone, key_format, 0)
    timetable = parse_timetable(encoded, dag_id="parity_partitions")
    assert isinstance(timetable, CronPartitionTimetable)
    lo, hi = data.draw(ranges(expression_max_days(expr)))
    runs = list(BackfillPlan(timetable, lo, hi, False, lo).runs())
    if not runs:
        return
    first, last = sorted(
        (runs[picks[0] % len(runs)], runs[picks[1] % len(runs)]), key=lambda r: r.sort_ordinal
    )
    keys = [r.info.partition_key for r in runs]
    for run in (first, last):
        key = run.info.partition_key
        assert key is not None
        if keys.count(key) > 1:  # a key format coarser than the schedule: refused, never guessed
            with pytest.raises(InvalidArgument, match="names several partitions"):
                timetable.bound_of_key(key, field="backfill.from_partition_key")
            return
    assert first.info.partition_key is not None and last.info.partition_key is not None
    try:
        low = timetable.bound_of_key(first.info.partition_key, field="backfill.from_partition_key")
        high = timetable.bound_of_key(last.info.partition_key, field="backfill.to_partition_key")
    except InvalidArgument as exc:
        # Only a key that cannot tell its partition (repeated outside the range, a DST fold,
        # or a lossy format) may be refused; and a zone name strptime cannot read back (%Z:
        # Airflow's own _decode_partition_date fails on it the same way).
        unreadable = "%Z" in key_format and "does not match the timetable's key_format" in str(exc)
        assert unreadable or "names several partitions" in str(exc) or "names no partition" in str(exc)
        return
    # Airflow, given the dates the keys stand for, plans exactly the partitions between them.
    expected = airflow_plan(sdag, low, high, False)
    assert [row[2] for row in expected] == keys[first.sort_ordinal - 1 : last.sort_ordinal]
    assert [row[3] for row in expected] == [
        r.info.partition_date for r in runs[first.sort_ordinal - 1 : last.sort_ordinal]
    ]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("2024-01-01", "does not match the timetable's key_format"),
        ("2024-01-01T00:30:00", "names no partition"),
        ("2024-13-01T00:00:00", "does not match"),
    ],
)
def test_keys_that_name_no_partition_are_refused(key: str, message: str) -> None:
    encoded, _ = serialize("0 * * * *", "Europe/Amsterdam", "%Y-%m-%dT%H:%M:%S", 0)
    timetable = parse_timetable(encoded, dag_id="parity_partitions")
    assert isinstance(timetable, CronPartitionTimetable)
    with pytest.raises(InvalidArgument, match=message) as caught:
        timetable.bound_of_key(key, field="backfill.from_partition_key")
    assert caught.value.field == "backfill.from_partition_key"


def test_a_daily_key_of_an_hourly_schedule_is_refused() -> None:
    encoded, _ = serialize("0 * * * *", "UTC", "%Y-%m-%d", 0)
    timetable = parse_timetable(encoded, dag_id="parity_partitions")
    assert isinstance(timetable, CronPartitionTimetable)
    with pytest.raises(InvalidArgument, match="names several partitions"):
        timetable.bound_of_key("2024-01-01", field="backfill.to_partition_key")


def _backfill_type() -> Any:
    from airflow.utils.types import DagRunType

    return DagRunType.BACKFILL_JOB


def _pendulum(value: dt.datetime) -> Any:
    import pendulum

    return pendulum.instance(value)
