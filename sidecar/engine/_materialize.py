"""The materialiser: writing a backfill's planned runs batch by batch, each batch in its own short transaction.

Each batch claims the backfill's own ``sidecar_backfill`` row (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so replicas never write the same batch), writes the rows
of the next slots of the plan and advances the cursor in the same transaction:
a crash at any point loses nothing and duplicates nothing. Airflow's ``backfill``
row is only referenced (an FK key-share lock) for the length of one batch, so the
scheduler, which skips a backfill whose row is locked, is held up for milliseconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._model import Phase
from sidecar.engine._plans import build_plan, cursor_of, run_of
from sidecar.observability import BATCH_SECONDS, DATABASE_ERRORS, RUNS_WRITTEN, SLOTS_WRITTEN
from sidecar.store import DagCatalog, Database, RunContext, latest_log_template_id, write_batch
from sidecar.store._failures import classify
from sidecar.store._tables import backfill, dag_run, sidecar_backfill

log = logging.getLogger(__name__)

UNFINISHED_RUN_STATES = ("queued", "running")

#: The most task instances one batch (one transaction) writes: 1,000 runs of a 10-task DAG,
#: the fastest batch measured (docs/adr/0002-bulk-write-path.md).
TASK_INSTANCES_PER_BATCH = 10_000


@dataclass(frozen=True)
class MaterializeResult:
    """What one call wrote for one backfill."""

    runs_created: int
    slots_written: int
    exhausted: bool


async def count_unfinished_runs(conn: AsyncConnection, backfill_id: int) -> int:
    """Queued and running runs of a backfill."""
    value = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(dag_run)
        .where(dag_run.c.backfill_id == backfill_id, dag_run.c.state.in_(UNFINISHED_RUN_STATES))
    )
    return int(value or 0)


async def _claim(conn: AsyncConnection, backfill_id: int) -> Any:
    query = (
        sa.select(
            sidecar_backfill,
            backfill.c.max_active_runs,
            backfill.c.dag_run_conf,
            backfill.c.triggering_user_name,
            backfill.c.from_date,
            backfill.c.to_date,
            backfill.c.reprocess_behavior,
        )
        .join(backfill, backfill.c.id == sidecar_backfill.c.backfill_id)
        .where(
            sidecar_backfill.c.backfill_id == backfill_id,
            sidecar_backfill.c.phase == Phase.MATERIALIZING.value,
        )
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=sidecar_backfill, skip_locked=True)
    return (await conn.execute(query)).one_or_none()


async def materialize_batch(
    conn: AsyncConnection,
    catalog: DagCatalog,
    backfill_id: int,
    *,
    max_runs: int,
    now: dt.datetime,
) -> MaterializeResult | None:
    """Write up to ``max_runs`` next slots of one backfill inside the caller's transaction.

    Returns:
        What was written, or None when the backfill is not materialising or another
        replica holds it.
    """
    state = await _claim(conn, backfill_id)
    if state is None:
        return None
    loaded = await catalog.load(conn, state.dag_id)
    if loaded is None:  # the DAG was deleted: nothing more can be written
        log.warning("backfill %s: DAG %s is gone; stopping creation", backfill_id, state.dag_id)
        await _set_phase(conn, backfill_id, Phase.MATERIALIZED, now)
        return MaterializeResult(0, 0, exhausted=True)
    plan = build_plan(
        state.timetable, state.dag_id, state.from_date, state.to_date, state.run_backwards, state.cutoff
    )
    # Bound a batch by its task instances too, so that a wide DAG's batch stays as short.
    per_run = max(1, sum(len(task.map_indexes) for task in loaded.template.tasks))
    max_runs = max(1, min(max_runs, TASK_INSTANCES_PER_BATCH // per_run))
    batch = list(itertools.islice(plan.runs(after=run_of(state.cursor)), max_runs))
    conf = state.dag_run_conf if isinstance(state.dag_run_conf, dict) else None
    ctx = RunContext(
        backfill_id=backfill_id,
        dag=loaded.template,
        dag_version_id=loaded.dag_version_id,
        bundle_version=loaded.bundle_version,
        log_template_id=await latest_log_template_id(conn),
        conf=conf or {},
        triggering_user_name=state.triggering_user_name,
    )
    result = await write_batch(
        conn,
        ctx,
        batch,
        reprocess_behavior=state.reprocess_behavior,
        conf_given=state.dag_run_conf_given,
        now=now,
    )
    exhausted = len(batch) < max_runs
    values: dict[str, Any] = {
        "written_count": sidecar_backfill.c.written_count + len(batch),
        "skipped_count": sidecar_backfill.c.skipped_count + result.skipped,
        "updated_at": now,
    }
    if batch:
        values["cursor"] = cursor_of(batch[-1])
    if exhausted:
        values["phase"] = Phase.MATERIALIZED.value
        values["planned_count"] = sa.func.coalesce(
            sidecar_backfill.c.planned_count, sidecar_backfill.c.written_count + len(batch)
        )
    await conn.execute(
        sidecar_backfill.update().where(sidecar_backfill.c.backfill_id == backfill_id).values(**values)
    )
    if batch:
        log.info(
            "backfill %s: wrote slots %s..%s (%s runs created, %s reprocessed, %s skipped)",
            backfill_id,
            batch[0].sort_ordinal,
            batch[-1].sort_ordinal,
            result.created,
            result.reprocessed,
            result.skipped,
        )
    return MaterializeResult(result.created + result.reprocessed, len(batch), exhausted)


async def _set_phase(conn: AsyncConnection, backfill_id: int, phase: Phase, now: dt.datetime) -> None:
    await conn.execute(
        sidecar_backfill.update()
        .where(sidecar_backfill.c.backfill_id == backfill_id)
        .values(phase=phase.value, updated_at=now)
    )


async def materialize(
    db: Database,
    catalog: DagCatalog,
    backfill_id: int,
    *,
    runs_wanted: int | None,
    batch_size: int,
    now: dt.datetime,
) -> int:
    """Write batches until ``runs_wanted`` runs were made (None: the whole plan) or the plan ends.

    Each batch commits on its own. Returns the number of runs made or reprocessed.
    """
    made = 0
    postgres = db.engine.dialect.name == "postgresql"
    next_analyze = ANALYZE_FIRST
    while runs_wanted is None or made < runs_wanted:
        want = batch_size if runs_wanted is None else min(batch_size, runs_wanted - made)
        if postgres:
            # Stop at each ANALYZE point, so that no batch is planned on stale statistics.
            want = max(1, min(want, next_analyze - made))
        started = time.perf_counter()
        try:
            async with db.engine.begin() as conn:
                result = await materialize_batch(conn, catalog, backfill_id, max_runs=want, now=now)
        except Exception as exc:
            DATABASE_ERRORS.labels(classify(exc).value).inc()
            raise
        if result is None:
            break
        BATCH_SECONDS.observe(time.perf_counter() - started)
        RUNS_WRITTEN.inc(result.runs_created)
        SLOTS_WRITTEN.inc(result.slots_written)
        made += result.runs_created
        if result.exhausted:
            break
        if postgres and made >= next_analyze:
            await analyze_written_tables(db, everything=next_analyze == ANALYZE_FIRST)
            next_analyze = made * ANALYZE_GROWTH
    return made


#: A materialisation analyses the written tables once it has made this many runs, then ...
ANALYZE_FIRST = 250
#: ... re-analyses the written tables each time its runs grow by this factor.
ANALYZE_GROWTH = 4


async def analyze_written_tables(db: Database, *, everything: bool) -> None:
    """``ANALYZE`` the tables a backfill grows, so that plans see its rows.

    A brand-new DAG's runs are invisible to the planner's statistics: the foreign-key
    checks of ``task_instance -> dag_run`` (plans cached per connection) and the
    scheduler's per-DAG queries then scan ``dag_run`` sequentially, which makes a
    large backfill quadratic (5,000 runs x 10 tasks: 28 s instead of 5 s here).
    ANALYZE refreshes the statistics and invalidates those cached plans; it only takes
    a SHARE UPDATE EXCLUSIVE lock, so writers and the scheduler carry on.

    Args:
        db: The database.
        everything: Also ``task_instance`` and ``backfill_dag_run`` (the first time);
            later, only the cheap ``dag_run`` (one row per run): once batches commit,
            autovacuum's own ANALYZE keeps up with ``task_instance``, and analysing
            millions of its rows costs more than it saves (0.6 s of 6.7 s at 5,000 runs).
    """
    tables = "dag_run, task_instance, backfill_dag_run" if everything else "dag_run"
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(f"ANALYZE {tables}"))
