"""The materialiser: writing a backfill's planned runs batch by batch, each batch in its own short transaction.

Each batch claims the backfill (the ledger's ``claim_batch``: ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so replicas never write the same batch), writes the rows of the
next slots of the plan and advances the cursor in the same transaction: a crash at any
point loses nothing and duplicates nothing, and a batch that fails on a transient
database error is retried as a whole. Airflow's ``backfill`` row is only referenced (an
FK key-share lock) for the length of one batch, so the scheduler, which skips a
backfill whose row is locked, is held up for milliseconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from dataclasses import dataclass
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._plans import build_plan, cursor_of, run_of
from sidecar.observability import BATCH_SECONDS, RUNS_WRITTEN, SLOTS_WRITTEN
from sidecar.store import (
    DagCatalog,
    LoadedDag,
    PlanRecord,
    RunContext,
    Transactions,
    advance_cursor,
    analyze_written_tables,
    claim_batch,
    counted_runs,
    finish_writing,
    latest_log_template_id,
    write_batch,
)
from sidecar.vocabulary import counted

log = logging.getLogger(__name__)

#: The most task instances one batch (one transaction) writes: 1,000 runs of a 10-task DAG,
#: the fastest batch measured (docs/adr/0002-bulk-write-path.md).
TASK_INSTANCES_PER_BATCH = 10_000

#: A materialisation analyses ``task_instance`` and ``backfill_dag_run`` (for the scheduler's
#: plans) once it has made this many runs; the create's own first batch is this long.
ANALYZE_FIRST = 250
#: A batch analyses ``dag_run`` (before its task instances' foreign-key checks are planned)
#: when the backfill's runs exceed this many times the runs its statistics count.
ANALYZE_GROWTH = 4


@dataclass(frozen=True)
class MaterializeResult:
    """What one call wrote for one backfill."""

    runs_created: int
    slots_written: int
    exhausted: bool


async def materialize_batch(
    conn: AsyncConnection,
    catalog: DagCatalog,
    backfill_id: int,
    *,
    max_runs: int,
    now: dt.datetime,
    unpaused: bool = False,
    wait: bool = False,
    analyze: bool = True,
) -> MaterializeResult | None:
    """Write up to ``max_runs`` next slots of one backfill inside the caller's transaction.

    ``analyze=False`` (a rehearsal rolled back) never analyses ``dag_run``: ANALYZE's row
    counts in ``pg_class`` outlive a rollback.

    Returns:
        What was written, or None when the backfill is not materialising, another
        replica holds it (unless ``wait``: then its batch is waited for), or (with
        ``unpaused``) it is paused.
    """
    claimed = await claim_batch(conn, backfill_id, unpaused=unpaused, wait=wait)
    if claimed is None:
        return None
    loaded = await load_pinned(conn, catalog, claimed)
    if loaded is None:  # the DAG was deleted: nothing more can be written
        log.warning("backfill %s: DAG %s is gone; stopping creation", backfill_id, claimed.dag_id)
        await finish_writing(conn, claimed, now)
        return MaterializeResult(0, 0, exhausted=True)
    pinned = loaded.dag_version_id == claimed.dag_version_id
    plan = build_plan(
        claimed.timetable,
        claimed.dag_id,
        claimed.from_date,
        claimed.to_date,
        claimed.run_backwards,
        claimed.cutoff,
    )
    # Bound a batch by its task instances too, so that a wide DAG's batch stays as short.
    per_run = max(1, sum(len(task.map_indexes) for task in loaded.template.tasks))
    max_runs = max(1, min(max_runs, TASK_INSTANCES_PER_BATCH // per_run))
    batch = list(itertools.islice(plan.runs(after=run_of(claimed.cursor)), max_runs))
    ctx = RunContext(
        backfill_id=backfill_id,
        dag=loaded.template,
        dag_version_id=loaded.dag_version_id,
        bundle_version=claimed.bundle_version if pinned else loaded.bundle_version,
        log_template_id=await latest_log_template_id(conn),
        conf=claimed.dag_run_conf or {},
        triggering_user_name=claimed.triggering_user_name,
        run_on_latest_version=claimed.run_on_latest_version,
        selected_task_ids=claimed.selected_task_ids,
    )
    result = await write_batch(
        conn,
        ctx,
        batch,
        reprocess_behavior=claimed.reprocess_behavior,
        conf_given=claimed.dag_run_conf_given,
        now=now,
        catalog=catalog,
        statistics_growth=ANALYZE_GROWTH if analyze else None,
    )
    exhausted = len(batch) < max_runs
    await advance_cursor(
        conn,
        claimed,
        written=len(batch),
        skipped=result.skipped,
        cursor=cursor_of(batch[-1]) if batch else None,
        exhausted=exhausted,
        now=now,
    )
    if batch:
        log.info(
            "backfill %s: wrote slots %s..%s (%s created, %s reprocessed, %s skipped)",
            backfill_id,
            batch[0].sort_ordinal,
            batch[-1].sort_ordinal,
            counted(result.created, "run"),
            result.reprocessed,
            result.skipped,
        )
    return MaterializeResult(result.created + result.reprocessed, len(batch), exhausted)


async def load_pinned(conn: AsyncConnection, catalog: DagCatalog, claimed: PlanRecord) -> LoadedDag | None:
    """The DAG version a backfill's runs are written on: the one pinned when it was created.

    Airflow's ``_create_backfill`` writes every run on the version that was the latest when
    the backfill was created, so a DAG changed since does not change the runs written later.
    A backfill made before versions were pinned, or whose version is gone (``airflow db
    clean``), is written on the latest.
    """
    if claimed.dag_version_id is not None:
        loaded = await catalog.load(conn, claimed.dag_id, claimed.dag_version_id)
        if loaded is not None:
            return loaded
        log.warning(
            "backfill %s: its DAG version %s is gone; writing on the latest",
            claimed.backfill_id,
            claimed.dag_version_id,
        )
    return await catalog.load(conn, claimed.dag_id)


def count_batch(result: MaterializeResult, started: float) -> None:
    """Count a committed batch in the metrics (``started``: its ``perf_counter`` start)."""
    BATCH_SECONDS.observe(time.perf_counter() - started)
    RUNS_WRITTEN.inc(result.runs_created)
    SLOTS_WRITTEN.inc(result.slots_written)


async def materialize(
    tx: Transactions,
    catalog: DagCatalog,
    backfill_id: int,
    *,
    runs_wanted: int | None,
    batch_size: int,
    now: dt.datetime,
    unpaused: bool = False,
    wait: bool = False,
    made_before: int = 0,
) -> int:
    """Write batches until ``runs_wanted`` runs were made (None: the whole plan) or the plan ends.

    Each batch commits on its own (retried as a whole on a transient failure). With
    ``unpaused`` (the tick), writing stops at the first batch that finds the backfill
    paused. With ``wait`` (an eager create, first call or retry), a batch another writer
    holds (the tick, a replica, the first call) is waited for rather than skipped, and
    writing goes on after it: it returns only once the backfill is no longer
    materialising, every run of its plan committed, whoever wrote them. ``made_before``:
    the runs the create's own first batch made. Returns the number of runs made or
    reprocessed by this call.
    """
    made = 0
    # ``dag_run``'s statistics are refreshed by the batches themselves, before the
    # foreign-key checks that depend on them (``write_batch``'s ``statistics_growth``);
    # ``task_instance`` and ``backfill_dag_run`` are analysed once, for the scheduler,
    # when the backfill outgrows the runs they count (never, on a database with history
    # larger than the backfill). No batch waits for it or is cut short by it.
    analyze_at: int | None = None
    if tx.db.dialect == "postgresql" and (runs_wanted is None or runs_wanted > ANALYZE_FIRST):
        analyze_at = max(ANALYZE_FIRST, await tx.read(counted_runs) + 1)
    while runs_wanted is None or made < runs_wanted:
        want = batch_size if runs_wanted is None else min(batch_size, runs_wanted - made)
        started = time.perf_counter()
        result = await tx.write(
            partial(
                materialize_batch,
                catalog=catalog,
                backfill_id=backfill_id,
                max_runs=want,
                now=now,
                unpaused=unpaused,
                wait=wait,
            )
        )
        if result is None:
            break
        if tx.counted:  # not a rehearsal (serve's warm-up)
            count_batch(result, started)
        made += result.runs_created
        if analyze_at is not None and made_before + made >= analyze_at:
            await tx.write(partial(analyze_written_tables, everything=True, runs_written=made_before + made))
            analyze_at = None
        if result.exhausted:
            break
    return made
