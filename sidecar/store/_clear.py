"""Clearing existing runs for a backfill to reprocess them, set-based, as Airflow's ``dag.clear`` does.

For each run (finished, since unfinished runs are never reprocessed) Airflow's
``clear_task_instances`` archives every task instance's current try into
``task_instance_history`` (unfinished ones as ``failed``, with an end date),
deletes their reschedules, gives each a new uuid7 id, resets its state and
retry budget and refreshes it from the latest task definition; the run goes back
to ``queued`` with ``clear_number + 1``, and then the backfill claims it
(``backfill_id``, ``run_type``, ``triggered_by`` and, when given, ``conf``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import uuid6
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.catalog import DagTemplate, MapLength, TaskTemplate
from sidecar.errors import UnsupportedFeature
from sidecar.store._rows import (
    RUN_TYPE_BACKFILL,
    TRIGGERED_BY_BACKFILL,
    RunContext,
    task_instance_rows,
)
from sidecar.store._tables import dag_run, task_instance
from sidecar.store._versions import contract_of

if TYPE_CHECKING:
    from sidecar.store._writer import ExistingRun

_FINISHED_TI_STATES = ("success", "failed", "skipped", "upstream_failed", "removed")

# Columns task_instance_history shares with task_instance (3.3 schema; an older version's
# history lacks what its task_instance lacks, see sidecar.store._versions).
_HISTORY_COLUMNS = [
    "task_id",
    "dag_id",
    "run_id",
    "map_index",
    "try_number",
    "start_date",
    "duration",
    "max_tries",
    "hostname",
    "unixname",
    "pool",
    "pool_slots",
    "queue",
    "priority_weight",
    "operator",
    "custom_operator_name",
    "queued_dttm",
    "scheduled_dttm",
    "queued_by_job_id",
    "pid",
    "executor",
    "executor_config",
    "updated_at",
    "rendered_map_index",
    "context_carrier",
    "span_status",
    "external_executor_id",
    "trigger_id",
    "trigger_timeout",
    "next_method",
    "next_kwargs",
    "task_display_name",
    "dag_version_id",
    "retry_delay_override",
    "retry_reason",
]


_NO_HISTORY_YET = (
    "NOT EXISTS (SELECT 1 FROM task_instance_history h WHERE h.dag_id = ti.dag_id "
    "AND h.task_id = ti.task_id AND h.run_id = ti.run_id AND h.map_index = ti.map_index "
    "AND h.try_number = ti.try_number)"
)


def _seconds_between(dialect: str, later: str, earlier: str) -> str:
    """SQL for ``(later - earlier).total_seconds()`` (``TaskInstance.set_duration``)."""
    if dialect == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


async def _archive_tries(
    conn: AsyncConnection,
    dag_id: str,
    run_ids: Sequence[str],
    now: dt.datetime,
    task_ids: frozenset[str] | None = None,
) -> None:
    """``TaskInstanceHistory.record_ti`` for every task instance of the runs, set-based.

    An unfinished try is archived as ``failed``; its task instance first gets an end date
    (now) and a duration when it had no end date, as ``record_ti`` stamps them on the
    task instance itself. ``rendered_map_index`` is archived as the task instance's
    hybrid property reads it (the map index as text when nothing was rendered). With
    ``task_ids`` (a task subset) only those tasks' instances are archived.
    """
    finished = ", ".join(f"'{s}'" for s in _FINISHED_TI_STATES)
    unfinished = f"(ti.state IS NULL OR ti.state NOT IN ({finished}))"
    params: dict[str, Any] = {"dag_id": dag_id, "run_ids": list(run_ids), "now": now}
    run_ids_bind: sa.BindParameter[Any] = sa.bindparam("run_ids", expanding=True)
    now_bind: sa.BindParameter[Any] = sa.bindparam("now", type_=task_instance.c.end_date.type)
    in_runs = "ti.dag_id = :dag_id AND ti.run_id IN :run_ids"
    binds = [run_ids_bind]
    if task_ids is not None:
        in_runs += " AND ti.task_id IN :task_ids"
        params["task_ids"] = sorted(task_ids)
        binds.append(sa.bindparam("task_ids", expanding=True))
    duration = _seconds_between(conn.dialect.name, ":now", "ti.start_date")
    await conn.execute(
        sa.text(
            f"UPDATE task_instance AS ti SET end_date = :now, "
            f"duration = CASE WHEN ti.start_date IS NULL THEN NULL ELSE {duration} END "
            f"WHERE {in_runs} AND {unfinished} AND ti.end_date IS NULL AND {_NO_HISTORY_YET}"
        ).bindparams(*binds, now_bind),
        params,
    )
    contract = contract_of(conn)
    columns = [
        c for c in _HISTORY_COLUMNS if c != "rendered_map_index" and contract.has_column("task_instance", c)
    ]
    cols = ", ".join(columns)
    ti_cols = ", ".join(f"ti.{c}" for c in columns)
    await conn.execute(
        sa.text(
            f"INSERT INTO task_instance_history (task_instance_id, {cols}, rendered_map_index, state, end_date) "
            f"SELECT ti.id, {ti_cols}, "
            "COALESCE(ti.rendered_map_index, CASE WHEN ti.map_index >= 0 "
            "THEN CAST(ti.map_index AS VARCHAR(250)) END), "
            f"CASE WHEN {unfinished} THEN 'failed' ELSE ti.state END, ti.end_date "
            f"FROM task_instance ti WHERE {in_runs} AND {_NO_HISTORY_YET}"
        ).bindparams(*binds),
        params,
    )
    await conn.execute(
        sa.text(
            f"DELETE FROM task_reschedule WHERE ti_id IN (SELECT ti.id FROM task_instance ti WHERE {in_runs})"
        ).bindparams(*binds),
        {k: v for k, v in params.items() if k != "now"},
    )


def _runtime_length(
    task_id: str,
    mapping: MapLength,
    run_id: str,
    tasks: dict[str, TaskTemplate],
    lengths: dict[tuple[str, str], int],
) -> int | None:
    """``get_mapped_ti_count`` of a just-cleared run; None where Airflow finds it not fully populated.

    Raises:
        UnsupportedFeature: For XComs combined with ``zip``/``concat`` (not measured here).
    """
    if mapping.factors is None:
        raise UnsupportedFeature(
            f"reprocessing a run of task {task_id!r}, mapped over zip() or concat() of XComs"
        )
    total = 1
    for factor in mapping.factors:
        if isinstance(factor, int):
            total *= factor
            continue
        upstream = tasks.get(factor)
        if upstream is None or upstream.mapping is not None:
            # A mapped upstream's task instances were just cleared: unfinished, so unknown.
            return None
        length = lengths.get((run_id, factor))
        if length is None:
            return None
        total *= length
    return total


async def _mark_removed(
    conn: AsyncConnection, ctx: RunContext, run_ids: Sequence[str]
) -> set[tuple[str, str]]:
    """Airflow's ``_check_for_removed_or_restored_tasks`` on the cleared runs, set-based.

    Task instances of tasks the latest version no longer has, and map indexes the task's
    current map length no longer covers (the unmapped ``-1`` instance of a task whose
    literal length is now known, indexes past the length, every expanded index while an
    upstream XCom length is unknown) become ``removed``.

    Returns:
        ``(run_id, task_id)`` of every task instance the runs have.
    """
    dag_id = ctx.dag.dag_id
    tasks = {t.task_id: t for t in ctx.dag.tasks}
    rows = list(
        await conn.execute(
            sa.select(
                task_instance.c.id, task_instance.c.task_id, task_instance.c.run_id, task_instance.c.map_index
            ).where(task_instance.c.dag_id == dag_id, task_instance.c.run_id.in_(run_ids))
        )
    )
    upstreams = {
        factor
        for t in tasks.values()
        if t.mapping is not None and t.mapping.factors
        for factor in t.mapping.factors
        if isinstance(factor, str)
    }
    lengths: dict[tuple[str, str], int] = {}
    if upstreams:
        result = await conn.execute(
            sa.text(
                "SELECT run_id, task_id, length FROM task_map WHERE dag_id = :dag_id"
                " AND run_id IN :run_ids AND task_id IN :task_ids AND map_index < 0"
            ).bindparams(sa.bindparam("run_ids", expanding=True), sa.bindparam("task_ids", expanding=True)),
            {"dag_id": dag_id, "run_ids": list(run_ids), "task_ids": sorted(upstreams)},
        )
        lengths = {(r.run_id, r.task_id): int(r.length) for r in result}
    removed: list[Any] = []
    for row in rows:
        task = tasks.get(row.task_id)
        if task is None:
            removed.append(row.id)
            continue
        mapping = task.mapping
        if mapping is None:
            continue
        if mapping.literal is not None:
            if row.map_index < 0 or row.map_index >= mapping.literal:
                removed.append(row.id)
            continue
        total = _runtime_length(row.task_id, mapping, row.run_id, tasks, lengths)
        if (total is None and row.map_index >= 0) or (total is not None and row.map_index >= total):
            removed.append(row.id)
    if removed:
        await conn.execute(
            task_instance.update().where(task_instance.c.id.in_(removed)).values(state="removed")
        )
    return {(row.run_id, row.task_id) for row in rows}


def on_latest_version(conn: AsyncConnection, ctx: RunContext, run: ExistingRun) -> bool:
    """Whether reprocessing ``run`` moves it to the backfill's DAG version (``use_latest_version``).

    With ``run_on_latest_version`` always; without it only a run that has no version of its
    own (on 3.3: a run migrated from Airflow 2, or whose version ``airflow db clean`` deleted).
    """
    return ctx.run_on_latest_version or (
        run.created_dag_version_id is None and contract_of(conn).versionless_follow_run
    )


def _own_template(
    ctx: RunContext, run: ExistingRun, own_versions: Mapping[uuid.UUID, DagTemplate]
) -> DagTemplate | None:
    """The tasks a run kept on its own version is refreshed from (Airflow's ``get_dag_for_run``).

    A run without a bundle version (an unversioned bundle's) reads the latest version's
    tasks, which is the backfill's pinned one here, though it keeps its own version id;
    one with a bundle version reads its own version's (None when that version is gone).
    """
    if not run.bundle_version:
        return ctx.dag
    if run.created_dag_version_id is None:
        return None
    return own_versions.get(run.created_dag_version_id)


async def clear_runs_for_backfill(
    conn: AsyncConnection,
    ctx: RunContext,
    runs: Sequence[ExistingRun],
    *,
    conf_given: bool,
    now: dt.datetime,
    own_versions: Mapping[uuid.UUID, DagTemplate] | None = None,
) -> None:
    """Clear finished ``runs`` and attach them to the backfill, as ``dag.clear`` does.

    A run :func:`on_latest_version` moves to the backfill's pinned DAG version (``ctx``:
    the latest when the backfill was created) and bundle version: its task instances are
    refreshed from that version, gain the tasks it added and lose (``removed``) those it
    dropped. Any other run keeps its version, bundle version and task instances, which are
    refreshed from the tasks of the version Airflow reads for it (:func:`_own_template`;
    ``own_versions``: the versions of the runs with a bundle version, by id).

    With a task subset (``ctx.selected_task_ids``) only the selected tasks' instances are
    cleared, as Airflow's ``dag.clear(task_ids=...)`` does: the others keep their state.
    """
    dag_id = ctx.dag.dag_id
    run_ids = [r.run_id for r in runs]
    by_run_id = {r.run_id: r for r in runs}
    follow = contract_of(conn).versionless_follow_run
    latest = {r.run_id for r in runs if on_latest_version(conn, ctx, r)}
    await _archive_tries(conn, dag_id, run_ids, now, ctx.selected_task_ids)

    latest_tasks = {t.task_id: t for t in ctx.dag.tasks}
    tasks_of: dict[str, dict[str, TaskTemplate]] = {}
    for run in runs:
        if run.run_id in latest:
            tasks_of[run.run_id] = latest_tasks
            continue
        own = _own_template(ctx, run, own_versions or {})
        tasks_of[run.run_id] = {t.task_id: t for t in own.tasks} if own is not None else {}
    query = sa.select(
        task_instance.c.id,
        task_instance.c.task_id,
        task_instance.c.run_id,
        task_instance.c.try_number,
        task_instance.c.dag_version_id,
    ).where(task_instance.c.dag_id == dag_id, task_instance.c.run_id.in_(run_ids))
    if ctx.selected_task_ids is not None:
        query = query.where(task_instance.c.task_id.in_(sorted(ctx.selected_task_ids)))
    result = await conn.execute(query)
    contract = contract_of(conn)
    # Renewed where the version renews them (3.2+); 3.1 leaves the run's and its tasks' as they are.
    carriers = {run_id: contract.run_carrier() for run_id in run_ids}
    updates: list[dict[str, Any]] = []
    for row in result:
        task = tasks_of[row.run_id].get(row.task_id)
        version: uuid.UUID | None
        if row.run_id in latest:
            version = ctx.dag_version_id
        elif row.dag_version_id is None and follow:  # joins its run's version
            version = by_run_id[row.run_id].created_dag_version_id
        else:
            version = row.dag_version_id
        values: dict[str, Any] = {
            "old_id": row.id,
            "new_id": uuid6.uuid7(),
            "b_dag_version_id": version,
        }
        if contract.trace_carriers:
            values["b_context_carrier"] = contract.task_carrier(carriers[row.run_id])
        if task is not None:  # refreshed from the task's definition in the version it runs on
            values |= {
                "b_max_tries": row.try_number + task.max_tries,
                "b_pool": task.pool,
                "b_pool_slots": task.pool_slots,
                "b_queue": task.queue,
                "b_priority_weight": task.priority_weight,
                "b_operator": task.operator,
                "b_custom_operator_name": task.custom_operator_name,
                "b_executor": task.executor,
                "b_executor_config": task.executor_config,
                "b_task_display_name": task.task_display_name,
            }
        updates.append(values)
    refreshed = [u for u in updates if "b_pool" in u]
    kept = [u for u in updates if "b_pool" not in u]
    common = {
        "id": sa.bindparam("new_id", type_=task_instance.c.id.type),
        "state": None,
        "external_executor_id": None,
        "next_method": None,
        "next_kwargs": None,
        "updated_at": now,
        "dag_version_id": sa.bindparam("b_dag_version_id", type_=task_instance.c.dag_version_id.type),
    }
    if contract.trace_carriers:
        common["context_carrier"] = sa.bindparam(
            "b_context_carrier", type_=task_instance.c.context_carrier.type
        )
    where = task_instance.c.id == sa.bindparam("old_id", type_=task_instance.c.id.type)
    if refreshed:
        fields = [
            "max_tries",
            "pool",
            "pool_slots",
            "queue",
            "priority_weight",
            "operator",
            "custom_operator_name",
            "executor",
            "executor_config",
            "task_display_name",
        ]
        refresh = {f: sa.bindparam(f"b_{f}", type_=task_instance.c[f].type) for f in fields}
        await conn.execute(task_instance.update().where(where).values(**common, **refresh), refreshed)
    if kept:
        await conn.execute(
            task_instance.update()
            .where(where)
            .values(
                **common,
                max_tries=sa.func.greatest(task_instance.c.max_tries, task_instance.c.try_number)
                if conn.dialect.name == "postgresql"
                else sa.func.max(task_instance.c.max_tries, task_instance.c.try_number),
            ),
            kept,
        )

    moved = [run_id for run_id in run_ids if run_id in latest]
    present = await _mark_removed(conn, ctx, moved) if moved else set()

    # Tasks added in the latest version get their task instances (verify_integrity creates
    # them only for tasks that have no task instance at all in the run).
    missing: list[dict[str, Any]] = []
    for run_id in moved:
        for ti_row in task_instance_rows(ctx, run_id, contract.task_carrier(carriers[run_id]), now):
            if (run_id, ti_row["task_id"]) not in present:
                missing.append(ti_row)
    if missing:
        await conn.execute(task_instance.insert(), contract.project("task_instance", missing))

    run_values: dict[str, Any] = {
        "state": "queued",
        "start_date": None,
        "end_date": None,
        "last_scheduling_decision": None,
        "queued_at": now,
        "updated_at": now,
        "clear_number": dag_run.c.clear_number + 1,
        "backfill_id": ctx.backfill_id,
        "run_type": RUN_TYPE_BACKFILL,
        "triggered_by": TRIGGERED_BY_BACKFILL,
    }
    if contract.trace_carriers:
        run_values["context_carrier"] = sa.bindparam("carrier", type_=dag_run.c.context_carrier.type)
    if conf_given and contract.clear_sets_conf:
        run_values["conf"] = ctx.conf
    latest_values = {**run_values, "created_dag_version_id": ctx.dag_version_id}
    if ctx.bundle_version is not None and not ctx.dag.disable_bundle_versioning:
        latest_values["bundle_version"] = ctx.bundle_version
    for values, group in (
        (latest_values, [r for r in runs if r.run_id in latest]),
        (run_values, [r for r in runs if r.run_id not in latest]),
    ):
        if group:
            await conn.execute(
                dag_run.update()
                .where(dag_run.c.id == sa.bindparam("run_pk", type_=dag_run.c.id.type))
                .values(**values),
                [
                    {"run_pk": r.id} | ({"carrier": carriers[r.run_id]} if contract.trace_carriers else {})
                    for r in group
                ],
            )
