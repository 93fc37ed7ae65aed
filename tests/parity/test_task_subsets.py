"""Task subsets against Airflow 3.3.2 itself: the same tasks as ``DAG.partial_subset``.

Airflow 2's ``-t REGEX`` selected the tasks whose id ``re.search`` matches and widened them
with ``partial_subset`` (upstream, downstream, and the setups and teardowns the selected
tasks need); Airflow 3.3.2's SDK keeps that closure for a list of task ids. Each DAG here is
built with the SDK, serialized with Airflow's serializer, read by the catalog, and
:func:`sidecar.catalog.resolve_selection` must select exactly the tasks ``partial_subset``
keeps, for every regex, task-id list and include flag hypothesis draws.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import tempfile
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="subsets-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

from sidecar.catalog import TaskSelection, parse_dag, resolve_selection
from sidecar.errors import InvalidTaskSelection

if os.environ.get("CI") == "true":
    import airflow  # noqa: F401  (CI: a missing Airflow is a failure, not a skip)
else:
    pytest.importorskip("airflow")

from airflow.sdk import DAG
from airflow.sdk.bases.operator import BaseOperator

pytestmark = pytest.mark.airflow

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NAMES = ("extract_a", "extract_b", "load_a", "load_b", "report", "clean", "notify", "x")


class Noop(BaseOperator):
    """A plain operator with no side effects."""

    def execute(self, context: Any) -> None:
        return None


def _serialize(dag: Any) -> dict[str, Any]:
    from tests.parity.airflow_compat import DagSerialization

    return json.loads(json.dumps(DagSerialization.to_dict(dag)))


def _dag(edges: set[tuple[int, int]], count: int, rules: dict[int, str] | None = None) -> DAG:
    with DAG("subsets", schedule="@daily", start_date=START) as dag:
        ops = [Noop(task_id=NAMES[i], trigger_rule=(rules or {}).get(i, "all_success")) for i in range(count)]
        for a, b in edges:
            ops[a] >> ops[b]
    return dag


def _airflow_subset(dag: DAG, matched: list[str], upstream: bool, downstream: bool) -> set[str]:
    # The SDK's operator __deepcopy__ raises the recursion limit, which hypothesis reports as
    # an error; these DAGs are a few tasks deep, so the call goes without it.
    with mock.patch.object(sys, "setrecursionlimit"):
        subset = dag.partial_subset(
            task_ids=matched, include_upstream=upstream, include_downstream=downstream
        )
    return set(subset.task_ids)


@st.composite
def _dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    count = draw(st.integers(min_value=1, max_value=len(NAMES)))
    pairs = [(a, b) for a in range(count) for b in range(a + 1, count)]  # acyclic: a < b
    edges = draw(st.sets(st.sampled_from(pairs), max_size=len(pairs))) if pairs else set()
    return count, edges


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=_dags(),
    pattern=st.sampled_from(["^extract", "load", "_a$", "^(report|x)$", "b", "t", "^notify$", "."]),
    upstream=st.booleans(),
    downstream=st.booleans(),
)
def test_a_regex_selects_what_partial_subset_keeps(
    shape: tuple[int, set[tuple[int, int]]], pattern: str, upstream: bool, downstream: bool
) -> None:
    count, edges = shape
    dag = _dag(edges, count)
    matched = [t for t in dag.task_ids if re.search(pattern, t)]
    selection = TaskSelection(task_regex=pattern, include_upstream=upstream, include_downstream=downstream)
    template = parse_dag(_serialize(dag))
    if not matched:
        with pytest.raises(InvalidTaskSelection, match="matches none"):
            resolve_selection(template, selection)
        return
    assert set(resolve_selection(template, selection)) == _airflow_subset(dag, matched, upstream, downstream)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=_dags(), data=st.data())
def test_task_ids_select_what_partial_subset_keeps(
    shape: tuple[int, set[tuple[int, int]]], data: st.DataObject
) -> None:
    count, edges = shape
    dag = _dag(edges, count)
    ids = data.draw(st.lists(st.sampled_from(NAMES[:count]), min_size=1, max_size=count, unique=True))
    upstream, downstream = data.draw(st.booleans()), data.draw(st.booleans())
    selection = TaskSelection(task_ids=tuple(ids), include_upstream=upstream, include_downstream=downstream)
    template = parse_dag(_serialize(dag))
    resolved = resolve_selection(template, selection)
    assert set(resolved) == _airflow_subset(dag, ids, upstream, downstream)
    assert list(resolved) == [t.task_id for t in template.tasks if t.task_id in resolved]  # DAG order


def test_setups_and_teardowns_come_along_as_in_partial_subset() -> None:
    with DAG("subsets_setup", schedule="@daily", start_date=START) as dag:
        create = Noop(task_id="create_cluster")
        work = Noop(task_id="work")
        report = Noop(task_id="report")
        delete = Noop(task_id="delete_cluster")
        create >> work >> report >> delete.as_teardown(setups=create)
    template = parse_dag(_serialize(dag))
    for upstream in (False, True):
        for downstream in (False, True):
            for ids in (["work"], ["report"], ["create_cluster"], ["delete_cluster"]):
                selection = TaskSelection(
                    task_ids=tuple(ids), include_upstream=upstream, include_downstream=downstream
                )
                if ids == ["delete_cluster"] and not upstream:
                    # partial_subset keeps the teardown alone; its setup removed, Airflow would
                    # mark it upstream_failed (all_done_setup_success): refused instead.
                    with pytest.raises(InvalidTaskSelection, match="all_done_setup_success"):
                        resolve_selection(template, selection)
                    continue
                assert set(resolve_selection(template, selection)) == _airflow_subset(
                    dag, ids, upstream, downstream
                ), (ids, upstream, downstream)


def test_unknown_task_ids_are_named() -> None:
    template = parse_dag(_serialize(_dag({(0, 1)}, 2)))
    with pytest.raises(InvalidTaskSelection, match="'nope'") as caught:
        resolve_selection(template, TaskSelection(task_ids=("extract_a", "nope")))
    assert caught.value.field == "backfill.task_selection.task_ids"


def test_a_rule_an_excluded_upstream_cannot_satisfy_is_refused() -> None:
    # extract_a >> extract_b; one_success on extract_b waits forever for a removed upstream.
    template = parse_dag(_serialize(_dag({(0, 1)}, 2, {1: "one_success"})))
    with pytest.raises(InvalidTaskSelection, match="one_success") as caught:
        resolve_selection(template, TaskSelection(task_ids=("extract_b",)))
    assert caught.value.field == "backfill.task_selection"
    # With its upstream selected too, it is fine.
    assert resolve_selection(template, TaskSelection(task_ids=("extract_b",), include_upstream=True)) == (
        "extract_a",
        "extract_b",
    )
    # all_success (the default) counts a removed upstream as met: allowed.
    plain = parse_dag(_serialize(_dag({(0, 1)}, 2)))
    assert resolve_selection(plain, TaskSelection(task_ids=("extract_b",))) == ("extract_b",)


def test_a_pathological_regex_is_refused_within_its_deadline() -> None:
    with DAG("subsets_wide", schedule="@daily", start_date=START) as dag:
        for i in range(200):
            Noop(task_id="a" * 40 + f"_{i}")
    template = parse_dag(_serialize(dag))
    started = datetime.datetime.now()
    with pytest.raises(InvalidTaskSelection, match="took longer") as caught:
        resolve_selection(template, TaskSelection(task_regex=r"^(a|aa)+$"), match_seconds=0.2)
    assert caught.value.field == "backfill.task_selection.task_regex"
    assert (datetime.datetime.now() - started).total_seconds() < 5  # bounded, not exponential
