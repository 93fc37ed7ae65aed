"""The catalog against Airflow 3.3.2 itself: the same serialized DAG, the same TI rows.

Each DAG is built with the Airflow SDK, serialized with Airflow's serializer and
round-tripped through JSON (what ``serialized_dag.data`` holds). Airflow then deserializes
it and builds the task instance mappings of a new backfill run exactly as
``DagRun.verify_integrity`` does (``DagRun._create_tasks`` + ``TaskInstance.insert_mapping``),
with a stand-in session that reports no XCom/TaskMap rows (a fresh run). Those rows are
compared field by field with :func:`sidecar.catalog.parse_dag`.
"""

from __future__ import annotations

import copy
import datetime
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="catalog-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

from sidecar.catalog import DagTemplate, TaskTemplate, parse_dag, validate_conf
from sidecar.errors import InvalidConf, UnsupportedFeature
from sidecar.store._versions import CONTRACTS
from tests.parity.versions import AIRFLOW_MINOR

if os.environ.get("CI") == "true":
    import airflow  # noqa: F401  (CI: a missing Airflow is a failure, not a skip)
else:
    pytest.importorskip("airflow")

from airflow.sdk import DAG, Param, task, task_group
from airflow.sdk.bases.operator import BaseOperator

pytestmark = pytest.mark.airflow

#: The row contract of the Airflow under test (its conf rules).
CONTRACT = next(c for c in CONTRACTS if c.minor == AIRFLOW_MINOR)

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


class Noop(BaseOperator):
    """A plain operator with no side effects."""

    def execute(self, context: Any) -> None:
        return None


class Valued(Noop):
    """An operator with one mappable argument."""

    def __init__(self, *, value: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = value


class Named(Noop):
    """An operator with a custom operator name."""

    custom_operator_name = "MyNamed"


# --------------------------------------------------------------------------- oracle


class _FreshRunSession:
    """Answers every query like the database of a run that has no XCom or TaskMap yet."""

    def scalar(self, *args: Any, **kwargs: Any) -> None:
        return None

    def scalars(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unexpected query")


def _serialize(dag: Any) -> dict[str, Any]:
    from tests.parity.airflow_compat import DagSerialization

    return json.loads(json.dumps(DagSerialization.to_dict(dag)))


def _airflow_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The TI mappings Airflow's verify_integrity would bulk-insert for a new backfill run."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.sqlalchemy import ExecutorConfigType

    from tests.parity.airflow_compat import DagSerialization

    sdag = DagSerialization.from_dict(json.loads(json.dumps(data)))
    run = DagRun(dag_id=sdag.dag_id, run_id="backfill__2024-01-02T00:00:00+00:00", run_type="backfill")
    run.context_carrier = {}

    # 3.2+ pass the run (its trace carrier); 3.1's insert_mapping takes no dag_run.
    with_run = (
        {"dag_run": run} if "dag_run" in inspect.signature(TaskInstance.insert_mapping).parameters else {}
    )

    def creator(task_: Any, indexes: Any) -> Iterator[dict[str, Any]]:
        for map_index in indexes:
            yield TaskInstance.insert_mapping(
                run.run_id, task_, map_index=map_index, dag_version_id=None, **with_run
            )

    rows = list(run._create_tasks(sdag.task_dict.values(), creator, session=_FreshRunSession()))
    import dill
    from sqlalchemy.dialects import sqlite

    bind = ExecutorConfigType(pickler=dill).bind_processor(sqlite.dialect())
    for row in rows:
        row["executor_config_bytes"] = bind(row["executor_config"])
    return rows


def _our_rows(tpl: DagTemplate) -> list[dict[str, Any]]:
    rows = []
    for t in tpl.tasks:
        for map_index in t.map_indexes:
            rows.append(
                {
                    "task_id": t.task_id,
                    "map_index": map_index,
                    "queue": t.queue,
                    "pool": t.pool,
                    "pool_slots": t.pool_slots,
                    "priority_weight": t.priority_weight,
                    "max_tries": t.max_tries,
                    "executor": t.executor,
                    "executor_config_bytes": t.executor_config,
                    "operator": t.operator,
                    "custom_operator_name": t.custom_operator_name,
                    "_task_display_property_value": t.task_display_name,
                }
            )
    return rows


def _check(dag: Any) -> DagTemplate:
    data = _serialize(dag)
    tpl = parse_dag(data)
    expected = _airflow_rows(data)
    keys = _our_rows(tpl)[0].keys() if tpl.tasks else ()
    exp = sorted(({k: r[k] for k in keys} for r in expected), key=lambda r: (r["task_id"], r["map_index"]))
    ours = sorted(_our_rows(tpl), key=lambda r: (r["task_id"], r["map_index"]))
    assert ours == exp
    assert tpl.ti_count == len(expected)
    from tests.parity.airflow_compat import DagSerialization

    sdag = DagSerialization.from_dict(json.loads(json.dumps(data)))
    by_id = {t.task_id: t for t in tpl.tasks}
    assert set(by_id) == set(sdag.task_dict)
    for task_id, op in sdag.task_dict.items():
        assert by_id[task_id].depends_on_past == bool(op.depends_on_past), task_id
    assert tpl.has_depends_on_past == any(op.depends_on_past for op in sdag.task_dict.values())
    assert tpl.dag_id == sdag.dag_id
    assert tpl.timetable == data["dag"]["timetable"]
    assert tpl.disable_bundle_versioning == bool(sdag.disable_bundle_versioning)
    allowed = getattr(sdag, "allowed_run_types", None)  # new in 3.2
    expected_types = None if not allowed else sorted(str(x.value) for x in allowed)
    assert (None if tpl.allowed_run_types is None else sorted(tpl.allowed_run_types)) == expected_types
    return tpl


def _task(tpl: DagTemplate, task_id: str) -> TaskTemplate:
    return next(t for t in tpl.tasks if t.task_id == task_id)


# --------------------------------------------------------------------------- DAGs


def dag_chain() -> Any:
    with DAG("chain", schedule="@daily", start_date=START) as dag:
        a = Noop(task_id="a", priority_weight=2)
        b = Noop(task_id="b", priority_weight=3, pool="p1", pool_slots=2, queue="q1", retries=4)
        c = Noop(task_id="c", weight_rule="upstream", priority_weight=7, task_display_name="See")
        d = Noop(task_id="d", weight_rule="absolute", priority_weight=11, depends_on_past=True)
        a >> b >> c >> d
    return dag


def dag_fan() -> Any:
    with DAG("fan", schedule="@daily", start_date=START, default_args={"retries": 2, "queue": "dq"}) as dag:
        start = Noop(task_id="start")
        mids = [Noop(task_id=f"m{i}", priority_weight=i + 1, weight_rule="upstream") for i in range(4)]
        end = Noop(task_id="end", executor="LocalExecutor", executor_config={"a": 1, "b": [1, 2], "c": (3,)})
        start >> mids >> end
        lone = Named(task_id="lone", weight_rule="downstream")
        lone >> end
    return dag


def dag_groups() -> Any:
    with DAG("groups", schedule="@daily", start_date=START) as dag:

        @task_group
        def outer() -> None:
            @task_group
            def inner() -> None:
                Noop(task_id="x", priority_weight=5) >> Noop(task_id="y")

            first = Noop(task_id="first")
            first >> inner()

        o = outer()
        o >> Noop(task_id="after", weight_rule="upstream")
    return dag


def dag_mapped() -> Any:
    with DAG("mapped", schedule="@daily", start_date=START) as dag:

        @task
        def make() -> list[int]:
            return [1, 2]

        @task(task_display_name="Double it", retries=3, pool="mp", priority_weight=4)
        def double(x: int, y: int = 0) -> int:
            return x * 2 + y

        @task(
            weight_rule="upstream", executor_config={"k": "v"}, depends_on_past=True, executor="LocalExecutor"
        )
        def up(x: int) -> int:
            return x

        @task(weight_rule="absolute", queue="mq")
        def absolute(x: Any) -> Any:
            return x

        lit = double.expand(x=[1, 2, 3], y=(4, 5))
        kw = double.override(task_id="kw").expand_kwargs([{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}])
        xc = up.expand(x=make())
        empty = absolute.expand(x=[])
        as_dict = absolute.override(task_id="as_dict").expand(x={"a": 1, "b": 2})
        as_set = absolute.override(task_id="as_set").expand(x=(1, 2, 3, 4, 5))
        classic = Valued.partial(
            task_id="classic", pool="cp", retries=1, priority_weight=6, weight_rule="upstream"
        ).expand(value=[1, 2])
        mixed = double.override(task_id="mixed").expand(x=make(), y=[1, 2])
        lit >> kw >> xc >> empty >> as_dict >> as_set >> classic >> mixed

        @task_group
        def mg(v: int) -> None:
            @task
            def inner(v: int) -> int:
                return v

            @task_group
            def nested(w: int) -> None:
                @task
                def deep(w: int) -> int:
                    return w

                deep(w)

            inner(v) >> nested.expand(w=[7, 8, 9])

        mg.expand(v=[1, 2])

        @task_group
        def mg_xcom(v: int) -> None:
            Noop(task_id="plain")

        mg_xcom.expand(v=make())

        @task_group
        def mg_empty(v: int) -> None:
            Noop(task_id="plain")

        mg_empty.expand(v=[])
    return dag


def dag_params() -> Any:
    with DAG(
        "params",
        schedule=None,
        start_date=START,
        params={
            "count": Param(5, type="integer", minimum=0),
            "required": Param(type="string"),
            "email": Param("a@b.c", type="string", format="email"),
            "free": {"k": [1, {"z": 1}]},
            "nothing": None,
            "choice": Param("x", enum=["x", "y"]),
            "when": Param("2024-01-01", type="string", format="date"),
        },
    ) as dag:
        Noop(task_id="only")
    return dag


ALL_DAGS: dict[str, Callable[[], Any]] = {
    "chain": dag_chain,
    "fan": dag_fan,
    "groups": dag_groups,
    "mapped": dag_mapped,
    "params": dag_params,
}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(ALL_DAGS))
def test_rows_match_airflow(name: str) -> None:
    _check(ALL_DAGS[name]())


def test_chain_weights_are_explicit() -> None:
    tpl = _check(dag_chain())
    assert [t.task_id for t in tpl.tasks] == ["a", "b", "c", "d"]
    assert _task(tpl, "a").priority_weight == 2 + 3 + 7 + 11
    assert _task(tpl, "c").priority_weight == 7 + 3 + 2
    assert _task(tpl, "d").priority_weight == 11
    assert _task(tpl, "c").task_display_name == "See"
    assert _task(tpl, "a").task_display_name == "a"
    assert _task(tpl, "b").max_tries == 4
    assert tpl.has_depends_on_past
    assert _task(tpl, "a").executor_config == b"\x80\x05}\x94."


def test_mapped_indexes() -> None:
    tpl = _check(dag_mapped())
    idx = {t.task_id: t.map_indexes for t in tpl.tasks}
    assert idx["double"] == tuple(range(6))
    assert idx["kw"] == tuple(range(4))
    assert idx["up"] == (-1,)
    assert idx["absolute"] == (-1,)
    assert idx["as_dict"] == (0, 1)
    assert idx["as_set"] == tuple(range(5))
    assert idx["classic"] == (0, 1)
    assert idx["mixed"] == (-1,)
    assert idx["mg.inner"] == (0, 1)
    assert idx["mg.nested.deep"] == tuple(range(2 * 3))
    assert idx["mg_xcom.plain"] == (-1,)
    assert idx["mg_empty.plain"] == (-1,)
    assert idx["make"] == (-1,)
    assert _task(tpl, "double").custom_operator_name == "@task"
    assert _task(tpl, "double").operator == "_PythonDecoratedOperator"
    assert _task(tpl, "double").task_display_name == "Double it"


def test_task_fields_from_client_defaults() -> None:
    from tests.parity.airflow_compat import DagSerialization

    dag = dag_chain()
    data = _serialize(dag)
    data["client_defaults"] = {"tasks": {"queue": "cq", "retries": 9, "pool": "cpool"}}
    tpl = parse_dag(data)
    sdag = DagSerialization.from_dict(json.loads(json.dumps(data)))
    for t in tpl.tasks:
        op = sdag.task_dict[t.task_id]
        assert (t.queue, t.max_tries, t.pool) == (op.queue, op.retries, op.pool)
    assert _task(tpl, "a").queue == "cq"
    assert _task(tpl, "b").queue == "q1"


def test_client_defaults_for_mapped_tasks() -> None:
    data = _serialize(dag_mapped())
    data["client_defaults"] = {"tasks": {"queue": "cq", "retries": 9}}
    tpl = parse_dag(data)
    expected = _airflow_rows(data)
    got = {(r["task_id"], r["queue"], r["max_tries"]) for r in _our_rows(tpl)}
    assert got == {(r["task_id"], r["queue"], r["max_tries"]) for r in expected}


def test_version_2_is_read_and_version_1_refused() -> None:
    data = _serialize(dag_chain())
    data["__version"] = 2
    assert parse_dag(data).ti_count == 4
    data["__version"] = 1
    with pytest.raises(UnsupportedFeature, match="version"):
        parse_dag(data)


def test_custom_weight_rule_refused() -> None:
    data = _serialize(dag_chain())
    data["dag"]["tasks"][0]["__var"]["weight_rule"] = "my.plugin.Strategy"
    with pytest.raises(UnsupportedFeature, match="priority weight strategy"):
        parse_dag(data)


def test_builtin_strategy_qualname_accepted() -> None:
    data = _serialize(dag_chain())
    var = next(t["__var"] for t in data["dag"]["tasks"] if t["__var"]["task_id"] == "a")
    var["weight_rule"] = "airflow.task.priority_strategy._AbsolutePriorityWeightStrategy"
    tpl = parse_dag(data)
    assert _task(tpl, "a").priority_weight == 2
    if AIRFLOW_MINOR != "3.1":  # 3.1 registers its strategies by name only and writes no qualname
        assert {r["task_id"]: r["priority_weight"] for r in _airflow_rows(data)}["a"] == 2


def test_deadline_refused() -> None:
    data = _serialize(dag_chain())
    data["dag"]["deadline"] = ["0190b0b0-0000-7000-8000-000000000000"]
    with pytest.raises(UnsupportedFeature, match="deadline"):
        parse_dag(data)


def test_pod_override_refused() -> None:
    data = _serialize(dag_chain())
    data["dag"]["tasks"][0]["__var"]["executor_config"] = {
        "__type": "dict",
        "__var": {"pod_override": {"__type": "k8s.V1Pod", "__var": {}}},
    }
    with pytest.raises(UnsupportedFeature, match="pod_override"):
        parse_dag(data)


def test_allowed_run_types_and_bundle_flag() -> None:
    # allowed_run_types is new in 3.2: on 3.1 a DAG has none, and the sidecar reads none.
    allowed = {"allowed_run_types": ["backfill", "manual"]} if AIRFLOW_MINOR != "3.1" else {}
    with DAG("art", schedule=None, start_date=START, disable_bundle_versioning=True, **allowed) as dag:  # type: ignore[arg-type]
        Noop(task_id="t")
    tpl = _check(dag)
    assert (tpl.allowed_run_types is not None) == bool(allowed)
    assert tpl.disable_bundle_versioning is True
    assert parse_dag(_serialize(dag_chain())).allowed_run_types is None


# --------------------------------------------------------------------------- conf


def _airflow_conf_error(data: dict[str, Any], conf: Any) -> str | None:
    from tests.parity.airflow_compat import DagSerialization

    sdag = DagSerialization.from_dict(json.loads(json.dumps(data)))
    try:
        if hasattr(sdag.params, "deep_merge"):  # 3.2+: _validate_backfill_params
            sdag.params.deep_merge(conf).validate()
        else:  # 3.1: create_dagrun
            params = copy.deepcopy(sdag.params)
            if conf:
                params.update(conf)
            params.validate()
    except Exception as e:
        return str(e)
    return None


CONFS: list[Any] = [
    None,
    {},
    {"required": "here"},
    {"required": "here", "count": 0},
    {"required": "here", "count": -1},
    {"required": "here", "count": "5"},
    {"required": 3},
    {"count": 3},
    {"count": -1},  # two params fail: 3.1 names the conf's first, 3.2+ the DAG's first
    {"required": "x", "email": "not-an-email"},
    {"required": "x", "choice": "z"},
    {"required": "x", "when": "2024-13-45"},
    {"required": "x", "undeclared": {"any": ["thing"]}},
    {"required": "x", "nothing": 5, "free": None},
]


@pytest.mark.parametrize("conf", CONFS, ids=[json.dumps(c) for c in CONFS])
def test_conf_validation_matches_airflow(conf: Any) -> None:
    data = _serialize(dag_params())
    tpl = parse_dag(data)
    expected = _airflow_conf_error(data, conf)
    if expected is None:
        validate_conf(tpl, conf, CONTRACT.conf_rules)
    else:
        with pytest.raises(InvalidConf) as info:
            validate_conf(tpl, conf, CONTRACT.conf_rules)
        assert info.value.message == expected
        assert info.value.field == "backfill.dag_run_conf"


def test_conf_valid_without_params() -> None:
    tpl = parse_dag(_serialize(dag_chain()))
    validate_conf(tpl, None)
    validate_conf(tpl, {"anything": [1, 2]})


@pytest.mark.parametrize("conf", [[1, 2], "text", 5])
def test_conf_must_be_an_object(conf: Any) -> None:
    tpl = parse_dag(_serialize(dag_chain()))
    with pytest.raises(InvalidConf):
        validate_conf(tpl, conf)


def test_set_literal_counts_items() -> None:
    data = _serialize(dag_mapped())
    var = next(t["__var"] for t in data["dag"]["tasks"] if t["__var"]["task_id"] == "as_set")
    var["op_kwargs_expand_input"]["value"]["__var"]["x"] = {"__type": "set", "__var": [1, 2, 3]}
    tpl = parse_dag(data)
    assert _task(tpl, "as_set").map_indexes == (0, 1, 2)
    assert [r["map_index"] for r in _airflow_rows(data) if r["task_id"] == "as_set"] == [0, 1, 2]
