"""The materialiser: writing a backfill's planned runs batch by batch, each batch in its own short transaction.

Each batch claims the backfill (the ledger's ``claim_batch``: ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so replicas never write the same batch), writes the rows of the
next slots of the plan and advances the cursor in the same transaction: a crash at any
point loses nothing and duplicates nothing, and a batch that fails on a transient
database error is retried as a whole. Airflow's ``backfill`` row is only referenced (an
FK key-share lock) for the length of one batch, so the scheduler, which skips a
backfill whose row is locked, is held up for milliseconds (an eager create's lanes,
``sidecar.engine._lanes``, hold it from their first batch to their last).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.engine._plans import build_plan, cursor_of, run_of
from sidecar.observability import BATCH_SECONDS, RUNS_WRITTEN, SLOTS_WRITTEN
from sidecar.planning import BackfillPlan, PlannedRun
from sidecar.store import (
    BatchResult,
    DagCatalog,
    LoadedDag,
    PlanRecord,
    RunContext,
    Transactions,
    advance_cursor,
    analyze_written_tables,
    claim_batch,
    classify,
    counted_runs,
    finish_writing,
    latest_log_template_id,
    lock_writers,
    write_batch,
)
from sidecar.vocabulary import counted

log = logging.getLogger(__name__)

#: The most task instances one batch (one transaction) writes: 1,000 runs of a 10-task DAG,
#: the fastest batch measured (docs/adr/0002-bulk-write-path.md).
TASK_INSTANCES_PER_BATCH = 10_000

#: A materialisation analyses ``task_instance`` and ``backfill_dag_run`` (for the scheduler's
#: plans) once it has made this many runs, and more than their statistics count. Fewer are
#: left to autovacuum's own analysis (within a minute): until then the planner still sizes
#: a never-analysed table by its pages, and a backfill this small is cheap to scan.
ANALYZE_FIRST = 2_000
#: A batch analyses ``dag_run`` (before its task instances' foreign-key checks are planned)
#: when the backfill's runs exceed this many times the runs its statistics count.
ANALYZE_GROWTH = 4


@dataclass(frozen=True)
class Continuation:
    """Where a committed batch left its backfill, and what the next batches are written with.

    An eager create's lanes start from the create's own batch's (no second read of what
    that batch just read).
    """

    record: PlanRecord
    """The backfill's plan record as the batch committed it (cursor and counts moved on)."""
    loaded: LoadedDag
    """The DAG version the batch wrote on (:func:`load_pinned`)."""
    ctx: RunContext
    """What the batch's runs were written with."""


@dataclass(frozen=True)
class MaterializeResult:
    """What one call wrote for one backfill."""

    runs_created: int
    slots_written: int
    exhausted: bool
    after: Continuation | None = field(default=None, compare=False, repr=False)
    """A batch that did not finish the plan: where it left the backfill (None otherwise)."""


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
        writer holds it (unless ``wait``: then its batch is waited for; an eager create's
        lanes too, :func:`~sidecar.store.lock_writers`), or (with ``unpaused``) it is paused.
    """
    if not await lock_writers(conn, backfill_id, shared=False, wait=wait):
        return None  # an eager create's lanes are writing it
    claimed = await claim_batch(conn, backfill_id, unpaused=unpaused, wait=wait)
    if claimed is None:
        return None
    loaded = await load_pinned(conn, catalog, claimed)
    if loaded is None:  # the DAG was deleted: nothing more can be written
        log.warning("backfill %s: DAG %s is gone; stopping creation", backfill_id, claimed.dag_id)
        await finish_writing(conn, claimed, now)
        return MaterializeResult(0, 0, exhausted=True)
    plan = plan_of(claimed)
    max_runs = runs_per_batch(loaded, max_runs)
    batch = list(itertools.islice(plan.runs(after=run_of(claimed.cursor)), max_runs))
    ctx = run_context(claimed, loaded, await latest_log_template_id(conn))
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
        log_batch(backfill_id, batch, result)
    after = None
    if not exhausted:
        moved = replace(
            claimed,
            written_count=claimed.written_count + len(batch),
            skipped_count=claimed.skipped_count + result.skipped,
            cursor=cursor_of(batch[-1]),
        )
        after = Continuation(moved, loaded, ctx)
    return MaterializeResult(result.created + result.reprocessed, len(batch), exhausted, after)


def log_batch(backfill_id: int, batch: Sequence[PlannedRun], result: BatchResult) -> None:
    """The log line of a committed batch."""
    log.info(
        "backfill %s: wrote slots %s..%s (%s created, %s reprocessed, %s skipped)",
        backfill_id,
        batch[0].sort_ordinal,
        batch[-1].sort_ordinal,
        counted(result.created, "run"),
        result.reprocessed,
        result.skipped,
    )


def plan_of(record: PlanRecord) -> BackfillPlan:
    """A backfill's plan, from what its row stored when it was created."""
    return build_plan(
        record.timetable,
        record.dag_id,
        record.from_date,
        record.to_date,
        record.run_backwards,
        record.cutoff,
    )


def runs_per_batch(loaded: LoadedDag, batch_size: int) -> int:
    """A batch's runs: ``batch_size``, fewer for a wide DAG (at most :data:`TASK_INSTANCES_PER_BATCH` task instances)."""
    per_run = max(1, sum(len(task.map_indexes) for task in loaded.template.tasks))
    return max(1, min(batch_size, TASK_INSTANCES_PER_BATCH // per_run))


def run_context(record: PlanRecord, loaded: LoadedDag, log_template_id: int | None) -> RunContext:
    """What a backfill's runs are written with, on the DAG version ``loaded`` (:func:`load_pinned`)."""
    pinned = loaded.dag_version_id == record.dag_version_id
    return RunContext(
        backfill_id=record.backfill_id,
        dag=loaded.template,
        dag_version_id=loaded.dag_version_id,
        bundle_version=record.bundle_version if pinned else loaded.bundle_version,
        log_template_id=log_template_id,
        conf=record.dag_run_conf or {},
        triggering_user_name=record.triggering_user_name,
        run_on_latest_version=record.run_on_latest_version,
        selected_task_ids=record.selected_task_ids,
    )


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
    statistics: TableStatistics | None = None,
) -> int:
    """Write batches until ``runs_wanted`` runs were made (None: the whole plan) or the plan ends.

    Each batch commits on its own (retried as a whole on a transient failure). With
    ``unpaused`` (the tick), writing stops at the first batch that finds the backfill
    paused. With ``wait`` (an eager create, first call or retry), a batch another writer
    holds (the tick, a replica, the first call) is waited for rather than skipped, and
    writing goes on after it: it returns only once the backfill is no longer
    materialising, every run of its plan committed, whoever wrote them. ``made_before``:
    the runs the create's own first batch made. ``statistics``: when to analyse, if the
    caller (an eager create's lanes) already decided. Returns the number of runs made or
    reprocessed by this call.
    """
    made = 0
    if statistics is None:
        statistics = await TableStatistics.start(tx, runs_wanted)
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
        await statistics.after(tx, made_before + made)
        if result.exhausted:
            break
    return made


@dataclass
class TableStatistics:
    """When the tables a backfill grows are analysed for the scheduler's plans: once, at ``due``.

    ``dag_run``'s statistics are refreshed by the batches themselves, before the
    foreign-key checks that depend on them (``write_batch``'s ``statistics_growth``);
    ``task_instance`` and ``backfill_dag_run`` are analysed once, for the scheduler, when
    the backfill outgrows the runs they count (never, on a database with history larger
    than the backfill, nor when its tables are another role's). No batch waits for it or is
    cut short by it, and its failure fails no create (it is logged). A table another
    session held then is analysed once more at the end (:meth:`retry_skipped`).
    """

    due: int | None
    """The runs made (the create's first batch included) after which to analyse; None: never (again)."""
    skipped: tuple[str, ...] = ()
    """The tables the analysis skipped (another session held them), not retried yet."""

    @classmethod
    async def start(
        cls, tx: Transactions, runs_wanted: int | None, *, most: int | None = None
    ) -> TableStatistics:
        """When a materialisation of ``runs_wanted`` runs (None: the whole plan) analyses.

        ``most``: the most runs the whole plan can make, if known (its size): a plan
        smaller than :data:`ANALYZE_FIRST` is never analysed, so nothing is read.
        """
        bound = most if runs_wanted is None else runs_wanted
        if tx.db.dialect == "postgresql" and (bound is None or bound >= ANALYZE_FIRST):
            counted = await tx.read(counted_runs)
            return cls(None if counted is None else max(ANALYZE_FIRST, counted + 1))
        return cls(None)

    def reached(self, runs_made: int) -> bool:
        """Whether ``runs_made`` runs call for the analysis (not done yet)."""
        return self.due is not None and runs_made >= self.due

    async def after(self, tx: Transactions, runs_made: int) -> None:
        """Analyse (in a transaction of its own) if ``runs_made`` reached the point."""
        if self.reached(runs_made):
            self.due = None
            self.skipped = await self._analyse(tx, runs_made, None)

    async def retry_skipped(self, tx: Transactions, runs_made: int) -> None:
        """Analyse once more the tables the analysis skipped (never waiting for them either)."""
        if self.skipped:
            tables, self.skipped = self.skipped, ()
            if left := await self._analyse(tx, runs_made, tables):
                log.info("tables %s are held by another session again: left to autovacuum", left)

    @staticmethod
    async def _analyse(tx: Transactions, runs_made: int, only: tuple[str, ...] | None) -> tuple[str, ...]:
        """The tables skipped; none when the analysis failed (the runs it was for are committed)."""
        try:
            analysis = await tx.write(
                partial(analyze_written_tables, everything=True, runs_written=runs_made, only=only)
            )
        except sa.exc.DBAPIError as exc:  # never a CancelledError: a cancel of the create goes on
            log.warning("analysing the tables of %s runs failed (%s)", runs_made, classify(exc).value)
            return ()
        except Exception:  # not a database failure: a bug, shown whole in the log
            log.exception("analysing the tables of %s runs failed", runs_made)
            return ()
        return analysis.skipped
