"""Task subsets: which of a DAG's tasks a backfill runs.

Airflow 2's ``backfill -t REGEX`` / ``tasks clear -t REGEX -u -d`` semantics: a task is
matched when ``re.search(task_regex, task_id)`` finds something (or its id is one of
``task_ids``), then ``DAG.partial_subset`` widens the match: every transitive upstream
with ``include_upstream``, every transitive downstream with ``include_downstream``, and
always the setup and teardown tasks the selected tasks need (Airflow 2.7+, unchanged in
3.3.2's ``partial_subset``). ``tests/unit/test_task_subsets.py`` checks the closure
against Airflow 3.3.2's own ``partial_subset``.

The other tasks of each run get task instances in state ``removed`` (see
docs/controls.md "Task subsets" for why that state). A selected task whose upstream is
excluded then runs when its trigger rule counts a removed upstream as met (Airflow 2
dropped the edge instead); for the other rules, and for a mapped task (Airflow
marks its map indexes removed), the selection is refused here, before anything is written.

Matching is bounded: the pattern is matched with the ``regex`` module under a deadline
and with the GIL released, so a pathological pattern fails the request instead of
holding the server; callers run :func:`resolve_selection` off the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import regex

from sidecar.catalog._model import DagTemplate, TaskTemplate
from sidecar.errors import InvalidTaskSelection
from sidecar.vocabulary import counted

__all__ = [
    "MATCH_SECONDS",
    "REMOVED_UPSTREAM_MET",
    "TaskSelection",
    "resolve_selection",
]

#: Wall time the regex may spend matching all of a DAG's task ids.
MATCH_SECONDS = 1.0

#: Trigger rules that count an upstream in state ``removed`` as met (``TriggerRuleDep``
#: subtracts removed upstreams for these), so the task runs as if the edge were dropped.
REMOVED_UPSTREAM_MET = frozenset(
    {
        "all_success",
        "all_failed",
        "all_done",
        "none_failed",
        "none_skipped",
        "always",
        "all_done_setup_success",  # a teardown: as long as none of the excluded upstreams is a setup
    }
)

_FIELD = "backfill.task_selection"


@dataclass(frozen=True)
class TaskSelection:
    """What a caller asked to run: a regex or task ids, widened up and/or downstream.

    Attributes:
        task_regex: Matched with ``re.search`` against each task id; None when ``task_ids`` is used.
        task_ids: Explicit task ids (empty when ``task_regex`` is used).
        include_upstream: Also every transitive upstream of the matched tasks.
        include_downstream: Also every transitive downstream of the matched tasks.
    """

    task_regex: str | None = None
    task_ids: tuple[str, ...] = ()
    include_upstream: bool = False
    include_downstream: bool = False


def resolve_selection(
    dag: DagTemplate, selection: TaskSelection, *, match_seconds: float = MATCH_SECONDS
) -> tuple[str, ...]:
    """The task ids a backfill of ``dag`` runs, in the DAG's order.

    Raises:
        InvalidTaskSelection: an unknown task id, a regex matching nothing or too slow to
            match, or a selected task that could never run (see the module docstring).
    """
    tasks = {t.task_id: t for t in dag.tasks}
    matched = _matched(dag.tasks, selection, match_seconds)
    selected = _closure(tasks, matched, selection.include_upstream, selection.include_downstream)
    _check_runnable(tasks, selected)
    return tuple(t.task_id for t in dag.tasks if t.task_id in selected)


def _matched(tasks: Sequence[TaskTemplate], selection: TaskSelection, match_seconds: float) -> list[str]:
    if selection.task_regex is None:
        known = {t.task_id for t in tasks}
        unknown = [t for t in selection.task_ids if t not in known]
        if unknown:
            raise InvalidTaskSelection(
                f"task_ids names tasks the DAG does not have: {_few(unknown)}", field=f"{_FIELD}.task_ids"
            )
        return list(dict.fromkeys(selection.task_ids))
    pattern = regex.compile(selection.task_regex, flags=regex.VERSION0)
    deadline = time.monotonic() + match_seconds
    matched: list[str] = []
    try:
        for task in tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if pattern.search(task.task_id, timeout=remaining, concurrent=True) is not None:
                matched.append(task.task_id)
    except TimeoutError:
        raise InvalidTaskSelection(
            f"task_regex took longer than {match_seconds:g}s to match the DAG's {counted(len(tasks), 'task id')}; "
            "simplify the pattern",
            field=f"{_FIELD}.task_regex",
        ) from None
    if not matched:
        raise InvalidTaskSelection(
            f"task_regex {selection.task_regex!r} matches none of the DAG's {counted(len(tasks), 'task')}",
            field=f"{_FIELD}.task_regex",
        )
    return matched


def _reachable(starts: Iterable[str], edges: Mapping[str, Sequence[str]]) -> set[str]:
    """Every task reachable from ``starts`` along ``edges`` (the starts themselves only if on a cycle)."""
    seen: set[str] = set()
    stack = [n for s in starts for n in edges.get(s, ())]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return seen


def _closure(
    tasks: Mapping[str, TaskTemplate], matched: list[str], upstream: bool, downstream: bool
) -> set[str]:
    """``partial_subset``'s task set (``depth=None``, no direct upstreams)."""
    down = {t.task_id: t.downstream_task_ids for t in tasks.values()}
    up: dict[str, list[str]] = {t: [] for t in tasks}
    for task_id, children in down.items():
        for child in children:
            up.setdefault(child, []).append(task_id)
    selected = set(matched)
    if upstream:
        selected |= _reachable(matched, up)
    if downstream:
        selected |= _reachable(matched, down)
    if not any(t.is_setup for t in tasks.values()):
        return selected
    return selected | _setups_and_teardowns(tasks, matched, upstream, downstream, up, down)


def _setups_and_teardowns(
    tasks: Mapping[str, TaskTemplate],
    matched: list[str],
    upstream: bool,
    downstream: bool,
    up: Mapping[str, Sequence[str]],
    down: Mapping[str, Sequence[str]],
) -> set[str]:
    """The setups and teardowns ``partial_subset`` adds for a DAG that has setup tasks."""

    def teardowns_of(setup: str, but: str) -> set[str]:
        return {x for x in down[setup] if tasks[x].is_teardown and x != but}

    def relevant(task_id: str) -> set[str]:  # get_upstreams_only_setups_and_teardowns
        later_teardowns = {x for x in _reachable([task_id], down) if tasks[x].is_teardown}
        found: set[str] = set()
        for setup in _reachable([task_id], up):
            if not tasks[setup].is_setup:
                continue
            has_no_teardowns = not any(tasks[x].is_teardown for x in down[setup])
            if has_no_teardowns or later_teardowns.intersection(down[setup]):
                found.add(setup)
                found |= teardowns_of(setup, task_id)
        return found

    added: set[str] = set()
    matched_set = set(matched)
    for task_id in matched:
        task = tasks[task_id]
        if downstream:
            for rel in _reachable([task_id], down):
                if rel not in matched_set and not tasks[rel].is_setup and not tasks[rel].is_teardown:
                    added |= relevant(rel)
        if upstream:  # get_upstreams_follow_setups
            for rel in _reachable([task_id], up):
                if tasks[rel].is_setup:
                    added |= teardowns_of(rel, task_id)
        elif not task.is_setup and not task.is_teardown:
            added |= relevant(task_id)
        if task.is_setup and not downstream:
            added |= {x for x in down[task_id] if tasks[x].is_teardown}
    return added


def _check_runnable(tasks: Mapping[str, TaskTemplate], selected: set[str]) -> None:
    """Refuse a selection in which a selected task would wait for an excluded one forever."""
    up: dict[str, set[str]] = {}
    for task in tasks.values():
        for child in task.downstream_task_ids:
            up.setdefault(child, set()).add(task.task_id)
    for task_id in sorted(selected):
        task = tasks[task_id]
        excluded = sorted(up.get(task_id, set()) - selected)
        excluded_setup = task.trigger_rule == "all_done_setup_success" and any(
            tasks[u].is_setup for u in excluded
        )
        if excluded and (task.trigger_rule not in REMOVED_UPSTREAM_MET or excluded_setup):
            raise InvalidTaskSelection(
                f"task {task_id!r} has trigger rule {task.trigger_rule!r}, which an excluded upstream "
                f"({_few(excluded)}) can never satisfy: select those tasks too (or include_upstream)",
                field=_FIELD,
            )
        if excluded and task.mapping is not None:
            # TriggerRuleDep marks map indexes beyond the count of successful upstreams
            # removed when an upstream is removed: a mapped task needs all its upstreams.
            raise InvalidTaskSelection(
                f"task {task_id!r} is mapped and its upstream ({_few(excluded)}) is excluded: "
                "select those tasks too (or include_upstream)",
                field=_FIELD,
            )


def _few(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown if len(ids) <= limit else f"{shown} and {len(ids) - limit} more"
