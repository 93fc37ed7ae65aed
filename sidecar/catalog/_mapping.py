"""Map indexes of new task instances, as ``DagRun._create_tasks`` computes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.catalog._decode import TYPE, VAR
from sidecar.catalog._model import MapLength
from sidecar.errors import UnsupportedFeature

__all__ = ["GroupInfo", "expand_length", "map_indexes", "map_length", "walk_task_groups"]

#: Tags whose value is resolved at run time (XCom); the count is not known at creation.
_RUNTIME_TYPES = frozenset({"xcomref"})
#: Literal containers whose length is their item count.
_SIZED_TYPES = frozenset({"dict", "tuple", "set"})


class _NotFullyPopulated(Exception):
    """The length depends on an upstream XCom (Airflow's ``NotFullyPopulated``)."""


def _literal_length(value: Any, where: str) -> int:
    """Return ``len()`` of one literal mapped argument.

    Raises:
        _NotFullyPopulated: For an XCom reference.
        UnsupportedFeature: For anything else Airflow would not measure the same way.
    """
    if isinstance(value, (list, str)):
        return len(value)
    if isinstance(value, dict):
        type_ = value.get(TYPE)
        if type_ in _RUNTIME_TYPES:
            raise _NotFullyPopulated
        var = value.get(VAR)
        if type_ in _SIZED_TYPES and isinstance(var, (dict, list)):
            return len(var)
        raise UnsupportedFeature(f"mapped argument of type {type_!r} ({where})")
    raise UnsupportedFeature(f"mapped argument of JSON type {type(value).__name__} ({where})")


def expand_length(expand_input: Mapping[str, Any], where: str) -> int:
    """Return the total map length of an encoded expand input.

    Args:
        expand_input: ``{"type": "dict-of-lists" | "list-of-dicts", "value": <encoded>}``.
        where: A description of the owner, for error messages.

    Returns:
        The map length (may be 0).

    Raises:
        _NotFullyPopulated: When an XCom reference feeds the mapping.
        UnsupportedFeature: For an unknown expand input layout.
    """
    kind = expand_input.get("type")
    value = expand_input.get("value")
    if kind == "dict-of-lists":
        value = _expand_kwargs(value, where)
        if not value:
            return 0
        total = 1
        runtime = False
        for key, arg in value.items():
            try:
                total *= _literal_length(arg, f"{where}, argument {key!r}")
            except _NotFullyPopulated:
                runtime = True
        if runtime:
            raise _NotFullyPopulated
        return total
    if kind == "list-of-dicts":
        return _literal_length(value, f"{where}, expand_kwargs argument")
    raise UnsupportedFeature(f"expand input type {kind!r} ({where})")


class GroupInfo:
    """The enclosing mapped task groups of each task, innermost first."""

    def __init__(self) -> None:
        self.mapped_groups: dict[str, tuple[tuple[str, Mapping[str, Any]], ...]] = {}


def walk_task_groups(task_group: Mapping[str, Any] | None) -> GroupInfo:
    """Collect, for each task id in the task group tree, its enclosing mapped groups.

    Args:
        task_group: ``data["dag"]["task_group"]`` or None.

    Returns:
        The collected information.

    Raises:
        UnsupportedFeature: For a malformed tree.
    """
    info = GroupInfo()
    if not task_group:
        return info

    def visit(group: Mapping[str, Any], enclosing: tuple[tuple[str, Mapping[str, Any]], ...]) -> None:
        if group.get("is_mapped"):
            xi = group.get("expand_input")
            if not isinstance(xi, Mapping):
                raise UnsupportedFeature(f"mapped task group {group.get('_group_id')!r} without expand_input")
            enclosing = ((str(group.get("_group_id")), xi), *enclosing)
        children = group.get("children") or {}
        for child in children.values():
            if not isinstance(child, Sequence) or len(child) != 2:
                raise UnsupportedFeature("malformed task_group child")
            kind, val = child
            if kind == "operator":
                info.mapped_groups[str(val)] = enclosing
            elif kind == "taskgroup" and isinstance(val, Mapping):
                visit(val, enclosing)
            else:
                raise UnsupportedFeature(f"task_group child of kind {kind!r}")

    visit(task_group, ())
    return info


def _indexes(count: int) -> tuple[int, ...]:
    return tuple(range(count)) if count else (-1,)


def map_indexes(
    task_id: str,
    own_expand_input: Mapping[str, Any] | None,
    groups: tuple[tuple[str, Mapping[str, Any]], ...],
) -> tuple[int, ...]:
    """Return the map indexes Airflow creates for a task in a new run.

    Args:
        task_id: The task id (for error messages).
        own_expand_input: The task's expand input when it is a mapped operator.
        groups: Enclosing mapped groups, innermost first.

    Returns:
        ``(-1,)`` or ``(0, ..., n-1)``.
    """
    if own_expand_input is None and not groups:
        return (-1,)
    inputs: list[tuple[str, Mapping[str, Any]]] = []
    if own_expand_input is not None:
        inputs.append((f"task {task_id!r}", own_expand_input))
    inputs.extend((f"task group {group_id!r}", xi) for group_id, xi in groups)
    count = 1
    for where, xi in inputs:  # own input first, then groups innermost first, as Airflow does
        try:
            count *= expand_length(xi, where)
        except _NotFullyPopulated:
            return (-1,)
    return _indexes(count)


class _Unmeasured(Exception):
    """An XCom input combined in a way the sidecar does not measure (``zip``, ``concat``)."""


def _ref_factor(value: Mapping[str, Any]) -> str:
    """The upstream task whose ``task_map`` length an XCom reference stands for."""
    var = value.get(VAR)
    if not isinstance(var, Mapping):
        raise _Unmeasured
    kind = var.get("type") or ""
    if kind == "" and "task_id" in var:
        return str(var["task_id"])
    if kind == "map" and isinstance(var.get("arg"), Mapping):  # map() keeps its source's length
        return _ref_factor(var["arg"])
    raise _Unmeasured


def _arg_factor(value: Any, where: str) -> int | str:
    if isinstance(value, Mapping) and value.get(TYPE) in _RUNTIME_TYPES:
        return _ref_factor(value)
    return _literal_length(value, where)


def _expand_kwargs(value: Any, where: str) -> dict[str, Any]:
    """The keyword arguments of a ``dict-of-lists`` expand input, unwrapped from Airflow's encoding.

    Raises:
        UnsupportedFeature: The value is not a dict.
    """
    if isinstance(value, dict) and value.get(TYPE) == "dict":
        value = value.get(VAR)
    if not isinstance(value, dict):
        raise UnsupportedFeature(f"expand input without a dict value ({where})")
    return value


def _input_factors(expand_input: Mapping[str, Any], where: str) -> list[int | str]:
    """The factors of one expand input's total length (``get_total_map_length``)."""
    kind = expand_input.get("type")
    value = expand_input.get("value")
    if kind == "dict-of-lists":
        value = _expand_kwargs(value, where)
        if not value:
            return [0]
        return [_arg_factor(arg, f"{where}, argument {key!r}") for key, arg in value.items()]
    if kind == "list-of-dicts":
        return [_arg_factor(value, f"{where}, expand_kwargs argument")]
    raise UnsupportedFeature(f"expand input type {kind!r} ({where})")


def map_length(
    task_id: str,
    own_expand_input: Mapping[str, Any] | None,
    groups: tuple[tuple[str, Mapping[str, Any]], ...],
) -> MapLength | None:
    """How a task's map length is known (None for a task that is not mapped at all).

    Args:
        task_id: The task id (for error messages).
        own_expand_input: The task's expand input when it is a mapped operator.
        groups: Enclosing mapped groups, innermost first.
    """
    if own_expand_input is None and not groups:
        return None
    inputs: list[tuple[str, Mapping[str, Any]]] = []
    if own_expand_input is not None:
        inputs.append((f"task {task_id!r}", own_expand_input))
    inputs.extend((f"task group {group_id!r}", xi) for group_id, xi in groups)
    try:
        factors = [f for where, xi in inputs for f in _input_factors(xi, where)]
    except _Unmeasured:
        return MapLength(literal=None, factors=None)
    if all(isinstance(f, int) for f in factors):
        count = 1
        for f in factors:
            count *= int(f)
        return MapLength(literal=count)
    return MapLength(literal=None, factors=tuple(factors))
