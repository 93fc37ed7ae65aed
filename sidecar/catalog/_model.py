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
        mapping: How the task's map length is known, for clearing an existing run
            (``DagRun._check_for_removed_or_restored_tasks``): None for a task that is
            not mapped (neither a mapped operator nor inside a mapped group).
        downstream_task_ids: The task's direct downstream task ids (task subsets).
        trigger_rule: ``task.trigger_rule`` (task subsets: how an excluded upstream counts).
        is_setup: ``task.is_setup``.
        is_teardown: ``task.is_teardown``.
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
    mapping: MapLength | None = None
    downstream_task_ids: tuple[str, ...] = ()
    trigger_rule: str = "all_success"
    is_setup: bool = False
    is_teardown: bool = False


@dataclass(frozen=True, slots=True)
class MapLength:
    """The map length of a mapped task (its own expand input times its mapped groups').

    Attributes:
        literal: The parse-time count when every input is a literal
            (``get_parse_time_mapped_ti_count``), else None.
        factors: When ``literal`` is None, the factors of the run-time count
            (``get_mapped_ti_count``): an int is a literal length, a str the id of the
            upstream task whose ``task_map`` length feeds the mapping. None when an input
            combines XComs in a way the sidecar does not measure (``zip``, ``concat``).
    """

    literal: int | None
    factors: tuple[int | str, ...] | None = ()


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
        rerun_with_latest_version: The DAG's flag (None when unset): Airflow's API and CLI
            clear reprocessed runs on their own DAG version when it is False.
    """

    dag_id: str
    timetable: Mapping[str, Any]
    tasks: tuple[TaskTemplate, ...]
    has_depends_on_past: bool
    allowed_run_types: tuple[str, ...] | None
    disable_bundle_versioning: bool
    params: DagParams
    ti_count: int
    rerun_with_latest_version: bool | None = None
