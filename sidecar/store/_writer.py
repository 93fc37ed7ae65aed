"""Writing one batch of a backfill's planned runs, in the caller's (short) transaction.

A batch is set-based: one lookup of the existing runs of its dates, one insert of
the new ``dag_run`` rows (conflicts skipped, then recorded as "in flight" as Airflow
does on a race), one insert of their task instances, one insert of the
``backfill_dag_run`` rows, and a set-based clear of the runs to reprocess.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.catalog import DagTemplate
from sidecar.planning import PlannedRun
from sidecar.store._bulk import (
    TaskInstanceMethod,
    copy_task_instances,
    driver_connection,
    json_text,
    unnest_insert,
    unnest_task_instances,
)
from sidecar.store._clear import clear_runs_for_backfill, on_latest_version
from sidecar.store._dags import DagCatalog
from sidecar.store._rows import RunContext, dag_run_row, task_instance_bases, task_instance_rows
from sidecar.store._runs import analyze_runs_if_outgrown
from sidecar.store._tables import backfill_dag_run, dag_run, task_instance
from sidecar.store._versions import AirflowRowContract, contract_of
from sidecar.vocabulary import Disposition, ReprocessBehavior


@dataclass(frozen=True, slots=True)
class ExistingRun:
    """A DAG run already present for a planned logical date."""

    id: int
    run_id: str
    state: str | None
    created_dag_version_id: uuid.UUID | None = None
    """The DAG version it was created (or last moved) on; a clear may keep it."""
    bundle_version: str | None = None
    """Its bundle version: without one, Airflow reads its tasks from the latest DAG version."""


def decide(existing: ExistingRun | None, reprocess_behavior: ReprocessBehavior) -> Disposition:
    """Airflow's ``_get_dag_run_no_create_reason``: create, reprocess or skip (with the reason).

    Airflow's matrix (``airflow/models/backfill.py``): no run yet, create one; a run not
    finished is "in flight"; a finished one is reprocessed when the behaviour asks for
    its state (``completed``: success or failed; ``failed``: failed only), else it
    "already exists". docs/adr/0003-parity.md lists the tests that pin it to Airflow's.
    """
    if existing is None:
        return Disposition.CREATE
    if existing.state not in ("success", "failed"):
        return Disposition.IN_FLIGHT
    if reprocess_behavior is ReprocessBehavior.COMPLETED or (
        reprocess_behavior is ReprocessBehavior.FAILED and existing.state == "failed"
    ):
        return Disposition.REPROCESS
    return Disposition.ALREADY_EXISTS


async def find_existing_runs(
    conn: AsyncConnection, dag_id: str, runs: Sequence[PlannedRun]
) -> dict[dt.datetime, ExistingRun]:
    """The existing run of each of the batch's slots, by its identity, in one query.

    A slot's identity (:attr:`DagRunInfo.identity`) is its logical date, or a partition's
    date: Airflow finds a partition's run by ``partition_date`` and, several runs sharing
    it (a reprocessed partition keeps its old run), takes the one
    ``_get_latest_dag_run_row_query`` orders first: started ones before unstarted, the
    latest start first (ties, which Airflow leaves to the database: the newest row).
    """
    if not runs:
        return {}
    dates = [r.info.identity for r in runs]
    column = dag_run.c.partition_date if runs[0].info.partitioned else dag_run.c.logical_date
    result = await conn.execute(
        sa.select(
            dag_run.c.id,
            dag_run.c.run_id,
            dag_run.c.state,
            column.label("identity"),
            dag_run.c.start_date,
            dag_run.c.created_dag_version_id,
            dag_run.c.bundle_version,
        )
        .where(dag_run.c.dag_id == dag_id, column >= min(dates), column <= max(dates))
        .order_by(dag_run.c.start_date.is_(None), dag_run.c.start_date.desc(), dag_run.c.id.desc())
    )
    wanted = set(dates)
    found: dict[dt.datetime, ExistingRun] = {}
    for row in result:
        if row.identity in wanted and row.identity not in found:
            found[row.identity] = ExistingRun(
                row.id, row.run_id, row.state, row.created_dag_version_id, row.bundle_version
            )
    return found


async def _own_versions(
    conn: AsyncConnection, catalog: DagCatalog, ctx: RunContext, runs: Sequence[ExistingRun]
) -> dict[uuid.UUID, DagTemplate]:
    """The DAG versions the ``runs`` a clear keeps on their own version read their tasks from, by id."""
    wanted = {
        r.created_dag_version_id
        for r in runs
        if r.created_dag_version_id is not None and r.bundle_version and not on_latest_version(conn, ctx, r)
    }
    found: dict[uuid.UUID, DagTemplate] = {}
    for version_id in sorted(wanted, key=str):
        loaded = await catalog.load(conn, ctx.dag.dag_id, version_id)
        if loaded is not None:  # gone (``airflow db clean``): its tasks are kept as they are
            found[version_id] = loaded.template
    return found


@dataclass(frozen=True)
class BatchResult:
    """What a batch wrote."""

    created: int
    reprocessed: int
    skipped: int


def _insert_ignoring_conflicts(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(dag_run).on_conflict_do_nothing()
    return sqlite.insert(dag_run).on_conflict_do_nothing()


async def _create_runs_bulk(
    conn: AsyncConnection,
    ctx: RunContext,
    runs: Sequence[PlannedRun],
    now: dt.datetime,
    method: TaskInstanceMethod,
    contract: AirflowRowContract,
    statistics_growth: int | None,
) -> dict[str, int]:
    """Insert new runs (skipping conflicts) and their task instances; return the new ids by run id.

    With ``statistics_growth``, ``dag_run`` is analysed between the two when the backfill
    outgrew its statistics (:func:`analyze_runs_if_outgrown`), so that the task instances'
    foreign-key checks are planned on statistics that count the DAG's runs.
    """
    driver = await driver_connection(conn)
    rows = [dag_run_row(ctx, run, now, contract.run_carrier()) for run in runs]
    for row in rows:  # serialised once, for the run and for its task instances
        row["context_carrier"] = json_text(row["context_carrier"])
    carriers = {row["run_id"]: contract.task_carrier(row["context_carrier"]) for row in rows}
    inserted = await unnest_insert(
        driver,
        "dag_run",
        contract.project("dag_run", rows),
        suffix="ON CONFLICT DO NOTHING RETURNING id, run_id",
    )
    created = {record["run_id"]: record["id"] for record in inserted}
    new_runs = [(record["run_id"], carriers[record["run_id"]]) for record in inserted]
    if statistics_growth is not None and new_runs:
        await analyze_runs_if_outgrown(conn, runs_written=runs[-1].sort_ordinal, growth=statistics_growth)
    if method == "copy":
        bases = task_instance_bases(ctx, now)
        await copy_task_instances(driver, bases, new_runs, contract.columns("task_instance"))
    elif new_runs:
        ti_rows = [
            row for run_id, carrier in new_runs for row in task_instance_rows(ctx, run_id, carrier, now)
        ]
        await unnest_task_instances(driver, contract.project("task_instance", ti_rows))
    return created


async def write_batch(
    conn: AsyncConnection,
    ctx: RunContext,
    runs: Sequence[PlannedRun],
    *,
    reprocess_behavior: ReprocessBehavior,
    conf_given: bool,
    now: dt.datetime,
    bulk_method: TaskInstanceMethod | None = "copy",
    catalog: DagCatalog | None = None,
    statistics_growth: int | None = None,
) -> BatchResult:
    """Write the rows of ``runs`` (consecutive slots of the plan) inside the caller's transaction.

    On PostgreSQL the rows go through the bulk path (:mod:`sidecar.store._bulk`) unless
    ``bulk_method`` is None; SQLite (and ``bulk_method=None``) uses SQLAlchemy's
    executemany. Both write the same values, built by :mod:`sidecar.store._rows`, with the
    columns the database's Airflow version has (:mod:`sidecar.store._versions`).

    With ``statistics_growth`` (bulk path), ``dag_run`` is analysed after the batch's runs
    are inserted and before their task instances when the backfill's runs (up to this
    batch) exceed that many times what its statistics count.

    New runs are written on ``ctx``'s DAG version; reprocessed runs that keep their own
    (``ctx.run_on_latest_version`` off) are refreshed from it, read through ``catalog``.

    Returns:
        Counts of runs created, existing runs cleared for reprocessing, and slots skipped.
    """
    dialect = conn.dialect.name
    contract = contract_of(conn)
    existing = await find_existing_runs(conn, ctx.dag.dag_id, runs)
    decisions = [(run, decide(existing.get(run.info.identity), reprocess_behavior)) for run in runs]

    # A partition is reprocessed with a new run beside its old one (Airflow 3.3 keeps the
    # old run as a record, #68618); a dated run is cleared and run again.
    to_create = [
        run
        for run, d in decisions
        if d is Disposition.CREATE or (d is Disposition.REPROCESS and run.info.partitioned)
    ]
    created_ids: dict[str, int] = {}
    bulk = dialect == "postgresql" and bulk_method is not None
    if to_create and bulk:
        created_ids = await _create_runs_bulk(
            conn, ctx, to_create, now, bulk_method or "copy", contract, statistics_growth
        )
    elif to_create:
        rows = [dag_run_row(ctx, run, now, contract.run_carrier()) for run in to_create]
        result = await conn.execute(
            _insert_ignoring_conflicts(dialect).returning(
                dag_run.c.id, dag_run.c.run_id, dag_run.c.context_carrier
            ),
            contract.project("dag_run", rows),
        )
        ti_rows: list[dict[str, Any]] = []
        for row in result:
            created_ids[row.run_id] = row.id
            ti_rows.extend(
                task_instance_rows(ctx, row.run_id, contract.task_carrier(row.context_carrier), now)
            )
        if ti_rows:
            await conn.execute(task_instance.insert(), contract.project("task_instance", ti_rows))

    to_clear = [
        existing[run.info.identity]
        for run, d in decisions
        if d is Disposition.REPROCESS and not run.info.partitioned
    ]
    if to_clear:
        own_versions = await _own_versions(conn, catalog or DagCatalog(), ctx, to_clear)
        await clear_runs_for_backfill(
            conn, ctx, to_clear, conf_given=conf_given, now=now, own_versions=own_versions
        )

    bdr_rows: list[dict[str, Any]] = []
    skipped = reprocessed = 0
    for run, disposition in decisions:
        dag_run_id: int | None = None
        reason: str | None = None
        if disposition is Disposition.CREATE or (
            disposition is Disposition.REPROCESS and run.info.partitioned
        ):
            dag_run_id = created_ids.get(run.run_id)
            if dag_run_id is None:  # lost a race with another writer of that date
                reason = Disposition.IN_FLIGHT.value
        elif disposition is Disposition.REPROCESS:
            dag_run_id = existing[run.info.identity].id
        else:
            reason = disposition.value
        if reason is not None:
            skipped += 1
        elif disposition is Disposition.REPROCESS:
            reprocessed += 1
        bdr_rows.append(
            {
                "backfill_id": ctx.backfill_id,
                "dag_run_id": dag_run_id,
                "exception_reason": reason,
                "logical_date": None if run.info.partitioned else run.info.logical_date,
                "partition_key": run.info.partition_key,
                "sort_ordinal": run.sort_ordinal,
            }
        )
    bdr_written = contract.project("backfill_dag_run", bdr_rows)
    if bdr_rows and bulk:
        await unnest_insert(await driver_connection(conn), "backfill_dag_run", bdr_written)
    elif bdr_rows:
        await conn.execute(backfill_dag_run.insert(), bdr_written)
    created = len(created_ids) - sum(
        1 for run, d in decisions if d is Disposition.REPROCESS and run.run_id in created_ids
    )
    return BatchResult(created=created, reprocessed=reprocessed, skipped=skipped)
