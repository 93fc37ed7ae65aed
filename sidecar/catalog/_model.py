"""Value types produced by the catalog: one template per DAG and per task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DagParams", "DagTemplate", "ParamSpec", "TaskTemplate"]


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """What ``TaskInstance.insert_mapping`` would write for one task of a new run.

    Attributes:
        task_id: The (group-prefixed) task id.
        map_indexes: ``(-1,)`` for an unmapped task, an XCom-fed mapped task, or a
            literal of length 0; ``(0, ..., n-1)`` for a literal mapped task.
        pool: ``task.pool``.
        pool_slots: ``task.pool_slots``.
        queue: ``task.queue``.
        priority_weight: The total weight computed by the task's weight rule.
        operator: ``task.task_type``.
        custom_operator_name: ``task.operator_name`` (``_operator_name`` or ``task_type``).
        executor: ``task.executor``.
        executor_config: The bytes stored in ``task_instance.executor_config``.
        max_tries: ``task.retries``.
        task_display_name: ``task.task_display_name`` (display name or task id).
        depends_on_past: ``task.depends_on_past``.
    """

    task_id: str
    map_indexes: tuple[int, ...]
    pool: str
    pool_slots: int
    queue: str
    priority_weight: int
    operator: str
    custom_operator_name: str
    executor: str | None
    executor_config: bytes
    max_tries: int
    task_display_name: str
    depends_on_past: bool


class _NotSet:
    """Marker for a param that has no value (Airflow's ``NOTSET``)."""

    _instance: _NotSet | None = None

    def __new__(cls) -> _NotSet:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOTSET"


NOTSET: Any = _NotSet()


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One DAG param as the scheduler sees it after deserialization.

    Attributes:
        name: The param key.
        value: The default value (decoded), or ``NOTSET`` when there is none.
        schema: The JSON schema the value is checked against (``{}`` for none).
    """

    name: str
    value: Any
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DagParams:
    """The DAG-level params, in declaration order.

    Attributes:
        params: One spec per declared param.
    """

    params: tuple[ParamSpec, ...] = ()

    def names(self) -> tuple[str, ...]:
        """Return the declared param names in order.

        Returns:
            The names.
        """
        return tuple(p.name for p in self.params)


@dataclass(frozen=True)
class DagTemplate:
    """Everything the engine needs from one serialized DAG version.

    Attributes:
        dag_id: The DAG id.
        timetable: ``data["dag"]["timetable"]``, untouched.
        tasks: One template per task, in the serialized order.
        has_depends_on_past: Whether any task has ``depends_on_past``.
        allowed_run_types: The serialized value; ``None`` when absent or empty (as Airflow
            deserializes it).
        disable_bundle_versioning: The DAG's flag.
        params: The DAG params used for conf validation.
        ti_count: Total task instance rows per run.
    """

    dag_id: str
    timetable: Mapping[str, Any]
    tasks: tuple[TaskTemplate, ...]
    has_depends_on_past: bool
    allowed_run_types: tuple[str, ...] | None
    disable_bundle_versioning: bool
    params: DagParams
    ti_count: int
