"""Turning ``serialized_dag.data`` into a :class:`DagTemplate`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.catalog._decode import TYPE, VAR, decode, pickle_executor_config
from sidecar.catalog._mapping import map_indexes, map_length, walk_task_groups
from sidecar.catalog._model import DagTemplate, TaskTemplate
from sidecar.catalog._params import parse_params
from sidecar.catalog._weights import normalize_weight_rule, total_weights
from sidecar.errors import UnsupportedFeature

__all__ = ["parse_dag"]

#: ``schema.json`` operator defaults (Airflow 3.3.2) for the fields the catalog reads.
SCHEMA_DEFAULTS: Mapping[str, Any] = {
    "depends_on_past": False,
    "retries": 0,
    "queue": "default",
    "pool": "default_pool",
    "pool_slots": 1,
    "priority_weight": 1,
    "weight_rule": "downstream",
    "task_type": "BaseOperator",
    "trigger_rule": "all_success",
    "is_setup": False,
    "is_teardown": False,
}
#: Class defaults of ``SerializedBaseOperator`` for fields without a schema default.
CLASS_DEFAULTS: Mapping[str, Any] = {
    "executor": None,
    "executor_config": {},
    "_task_display_name": None,
    "_operator_name": None,
}
_DEFAULTS: Mapping[str, Any] = {**CLASS_DEFAULTS, **SCHEMA_DEFAULTS}

#: Fields of ``SerializedBaseOperator`` that a mapped operator keeps in ``partial_kwargs``
#: (the subset the catalog reads). ``weight_rule`` is deliberately absent: Airflow renames
#: a top-level one to ``_weight_rule`` before the move, so it never reaches partial_kwargs.
_MOVED_TO_PARTIAL = frozenset(
    {
        "depends_on_past",
        "retries",
        "queue",
        "pool",
        "pool_slots",
        "priority_weight",
        "executor",
        "executor_config",
        "trigger_rule",
        "is_setup",
        "is_teardown",
    }
)
#: Old operator field names renamed on read (``_preprocess_encoded_operator``).
_RENAMES = {"task_display_name": "_task_display_name", "_downstream_task_ids": "downstream_task_ids"}


def _decode_field(key: str, value: Any) -> Any:
    if key == "executor_config" or (isinstance(value, dict) and TYPE in value and VAR in value):
        return decode(value)
    return value


class _Operator:
    """Resolved view of one serialized operator's fields relevant to TI rows."""

    def __init__(self, encoded: Mapping[str, Any], client_defaults: Mapping[str, Any]) -> None:
        op = {**client_defaults, **encoded}
        for old, new in _RENAMES.items():
            if old in op:
                op[new] = op.pop(old)
        self.raw = op
        self.task_id = str(op["task_id"])
        self.is_mapped = bool(op.get("_is_mapped", False))
        self.task_type = str(op.get("task_type", SCHEMA_DEFAULTS["task_type"]))
        self.operator_name = str(op.get("_operator_name") or self.task_type)
        self.partial: dict[str, Any] = {}
        if self.is_mapped:
            if "partial_kwargs" in op:
                pk = op["partial_kwargs"] or {}
                self.partial = {k: _decode_field(k, v) for k, v in pk.items()}
                for k, v in client_defaults.items():
                    self.partial.setdefault(k, _decode_field(k, v))
            for k in _MOVED_TO_PARTIAL:
                if k in op and k not in self.partial:
                    self.partial[k] = _decode_field(k, op[k])

    def get(self, key: str) -> Any:
        """Return a field as the deserialized Airflow operator exposes it."""
        if self.is_mapped:
            return self.partial.get(key, _DEFAULTS.get(key))
        if key in self.raw:
            return _decode_field(key, self.raw[key])
        return _DEFAULTS.get(key)

    @property
    def weight_rule(self) -> str:
        """The normalized weight rule."""
        if self.is_mapped:
            value = self.partial.get("weight_rule") or SCHEMA_DEFAULTS["weight_rule"]
        else:
            value = self.raw.get("weight_rule", SCHEMA_DEFAULTS["weight_rule"])
        return normalize_weight_rule(self.task_id, value)

    @property
    def display_name(self) -> str:
        """``task_display_name``: the display name or the task id."""
        if self.is_mapped:
            return str(self.partial.get("task_display_name") or self.task_id)
        return str(self.raw.get("_task_display_name") or self.task_id)

    @property
    def expand_input(self) -> Mapping[str, Any] | None:
        """The encoded expand input of a mapped operator."""
        if not self.is_mapped:
            return None
        attr = self.raw.get("_expand_input_attr", "expand_input")
        xi = self.raw.get(attr)
        if not isinstance(xi, Mapping):
            raise UnsupportedFeature(f"mapped task {self.task_id!r} without {attr}")
        return xi


def _as_int(task_id: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise UnsupportedFeature(f"non-integer {key} {value!r} (task {task_id!r})")
    return int(value)


def _refuse_dag_features(dag: Mapping[str, Any]) -> None:
    if dag.get("deadline"):
        raise UnsupportedFeature("deadline alerts (dag 'deadline' is set)")


def parse_dag(data: Mapping[str, Any]) -> DagTemplate:
    """Build a :class:`DagTemplate` from the JSON of ``serialized_dag.data``.

    Args:
        data: The decoded JSON document (``{"__version": 3, "dag": {...}, ...}``).

    Returns:
        The DAG template.

    Raises:
        UnsupportedFeature: For a serialization version or DAG feature whose task
            instance rows cannot be reproduced exactly.
    """
    version = data.get("__version")
    if version not in (2, 3):  # v2 -> v3 is a plain version bump in Airflow
        raise UnsupportedFeature(f"serialized DAG format version {version!r}")
    dag = data.get("dag")
    if not isinstance(dag, Mapping) or "dag_id" not in dag:
        raise UnsupportedFeature("serialized DAG without a dag object")
    _refuse_dag_features(dag)
    client_defaults_section = data.get("client_defaults") or {}
    client_defaults: Mapping[str, Any] = client_defaults_section.get("tasks") or {}

    ops: list[_Operator] = []
    for obj in dag.get("tasks") or []:
        if isinstance(obj, Mapping) and obj.get(TYPE) == "operator":
            ops.append(_Operator(obj[VAR], client_defaults))
    groups = walk_task_groups(dag.get("task_group"))

    own = {op.task_id: _as_int(op.task_id, "priority_weight", op.get("priority_weight")) for op in ops}
    rules = {op.task_id: op.weight_rule for op in ops}
    downstream = {op.task_id: [str(t) for t in (op.raw.get("downstream_task_ids") or [])] for op in ops}
    weights = total_weights(own, rules, downstream)

    tasks: list[TaskTemplate] = []
    for op in ops:
        executor = op.get("executor")
        tasks.append(
            TaskTemplate(
                task_id=op.task_id,
                map_indexes=map_indexes(
                    op.task_id, op.expand_input, groups.mapped_groups.get(op.task_id, ())
                ),
                pool=str(op.get("pool")),
                pool_slots=_as_int(op.task_id, "pool_slots", op.get("pool_slots")),
                queue=str(op.get("queue")),
                priority_weight=weights[op.task_id],
                operator=op.task_type,
                custom_operator_name=op.operator_name,
                executor=None if executor is None else str(executor),
                executor_config=pickle_executor_config(op.task_id, op.get("executor_config")),
                max_tries=_as_int(op.task_id, "retries", op.get("retries")),
                task_display_name=op.display_name,
                depends_on_past=bool(op.get("depends_on_past")),
                mapping=map_length(op.task_id, op.expand_input, groups.mapped_groups.get(op.task_id, ())),
                downstream_task_ids=tuple(downstream[op.task_id]),
                trigger_rule=str(op.get("trigger_rule")),
                is_setup=bool(op.get("is_setup")),
                is_teardown=bool(op.get("is_teardown")),
            )
        )
    allowed = dag.get("allowed_run_types")
    timetable = dag.get("timetable")
    return DagTemplate(
        dag_id=str(dag["dag_id"]),
        timetable=timetable if isinstance(timetable, Mapping) else {},
        tasks=tuple(tasks),
        has_depends_on_past=any(t.depends_on_past for t in tasks),
        allowed_run_types=tuple(str(x) for x in allowed) if allowed else None,
        disable_bundle_versioning=bool(dag.get("disable_bundle_versioning", False)),
        params=parse_params(dag.get("params")),
        ti_count=sum(len(t.map_indexes) for t in tasks),
        rerun_with_latest_version=(
            None if dag.get("rerun_with_latest_version") is None else bool(dag["rerun_with_latest_version"])
        ),
    )
