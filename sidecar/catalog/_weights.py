"""Priority weights, as Airflow's built-in priority weight strategies compute them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.errors import UnsupportedFeature

__all__ = ["normalize_weight_rule", "total_weights"]

_PREFIX = "airflow.task.priority_strategy."
_RULES = {
    "absolute": "absolute",
    "downstream": "downstream",
    "upstream": "upstream",
    _PREFIX + "_AbsolutePriorityWeightStrategy": "absolute",
    _PREFIX + "_DownstreamPriorityWeightStrategy": "downstream",
    _PREFIX + "_UpstreamPriorityWeightStrategy": "upstream",
}


def normalize_weight_rule(task_id: str, value: object) -> str:
    """Map a serialized weight rule to ``absolute``, ``downstream`` or ``upstream``.

    Args:
        task_id: The task, for error messages.
        value: The serialized ``weight_rule``.

    Returns:
        The built-in rule name.

    Raises:
        UnsupportedFeature: For a custom priority weight strategy (plugin).
    """
    if isinstance(value, str) and value in _RULES:
        return _RULES[value]
    raise UnsupportedFeature(f"custom priority weight strategy {value!r} (task {task_id!r})")


def _reachable(start: str, edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(edges.get(node, ()))
    return seen


def total_weights(
    own: Mapping[str, int],
    rules: Mapping[str, str],
    downstream: Mapping[str, Sequence[str]],
) -> dict[str, int]:
    """Compute each task's priority_weight as written into ``task_instance``.

    ``downstream``/``upstream`` add the own weights of all transitive relatives (the
    task itself excluded); the sums are not clamped, as in Airflow 3.3.2.

    Args:
        own: Each task's own ``priority_weight``.
        rules: Each task's normalized weight rule.
        downstream: Each task's direct downstream task ids.

    Returns:
        The total weight per task id.

    Raises:
        UnsupportedFeature: When a dependency names a task that is not in the DAG.
    """
    upstream: dict[str, list[str]] = {t: [] for t in own}
    for task_id, children in downstream.items():
        for child in children:
            if child not in own:
                raise UnsupportedFeature(f"task {task_id!r} has unknown downstream task {child!r}")
            upstream[child].append(task_id)
    totals: dict[str, int] = {}
    for task_id, weight in own.items():
        rule = rules[task_id]
        if rule == "absolute":
            totals[task_id] = weight
            continue
        relatives = _reachable(task_id, downstream if rule == "downstream" else upstream)
        relatives.discard(task_id)
        totals[task_id] = weight + sum(own[r] for r in relatives)
    return totals
