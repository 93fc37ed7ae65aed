"""The SQL the engine runs on Airflow's run tables: counting, listing and failing a backfill's runs.

Failing runs on cancel follows Airflow's "mark failed", not its own cancel (which fails
only queued runs and leaves their task instances without a state): task instances that
are running (or deferred, rescheduling, awaiting input) fail, every other unfinished one
is skipped, and the run ends ``failed`` with an end date. Finished task instances keep
their state.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._failures import Failure, classify
from sidecar.store._tables import backfill_dag_run, dag_run, task_instance
from sidecar.vocabulary import Disposition

__all__ = [
    "UNFINISHED_RUN_STATES",
    "Slot",
    "TableAnalysis",
    "analyze_runs_if_outgrown",
    "analyze_written_tables",
    "count_failed_runs",
    "count_unfinished_runs",
    "counted_runs",
    "fail_runs",
    "has_unfinished_runs",
    "plan_for_first_rows",
    "run_state_counts",
    "written_slots",
]

log = logging.getLogger(__name__)

UNFINISHED_RUN_STATES = ("queued", "running")
#: Task instance states Airflow's "mark failed" treats as running (they become failed).
RUNNING_TI_STATES = ("running", "deferred", "up_for_reschedule", "awaiting_input")
#: Finished task instance states: left as they are.
FINISHED_TI_STATES = ("success", "failed", "skipped", "upstream_failed", "removed")


_FIRST_ROWS = sa.select(
    sa.func.set_config("enable_seqscan", "off", sa.true()),
    sa.func.set_config("enable_bitmapscan", "off", sa.true()),
)


async def plan_for_first_rows(conn: AsyncConnection) -> None:
    """Plan the rest of this transaction's ``dag_run`` questions as index walks that stop early.

    The tick asks questions answered by the first few matching rows (an EXISTS, a count up
    to a window or a limit). PostgreSQL costs a ``LIMIT`` as if matches were spread evenly
    through the table, so once a backfill's runs are a large part of ``dag_run`` it prefers
    a sequential scan, which reads every finished run before the first queued one (they
    were inserted later), or a bitmap scan, which collects every match first; both grow
    with the backfill (issue 14). With them off, the index on ``(backfill_id, state)`` is
    walked and left at the first rows asked for. The settings end with the transaction
    (``set_config``'s ``is_local``: one round trip for both); SQLite is left alone.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(_FIRST_ROWS)


#: The backfill a tick question is about (the statements below are built once, bound per call).
_BACKFILL = sa.bindparam("backfill_id", type_=sa.Integer)


def _runs_in_state(state: str, at_most: int | None) -> sa.Select[tuple[int]]:
    """The ids of a backfill's runs in ``state``, at most ``at_most`` of them, read through the
    sidecar's index on ``dag_run (backfill_id, state)`` (:func:`~sidecar.store._database.ensure_runs_index`):
    what is read is the runs asked about, never the backfill's other runs nor the DAG's
    (issue 14: a tick's cost bounded by what is in flight, not by the size of the backfill
    or of the table)."""
    runs = sa.select(dag_run.c.id).where(dag_run.c.backfill_id == _BACKFILL, dag_run.c.state == state)
    if at_most is None:
        return runs
    # A subquery: SQLite refuses a LIMIT on a part of a UNION ALL; PostgreSQL keeps it in place.
    limited = runs.limit(at_most).subquery()
    return sa.select(limited.c.id)


def _unfinished_runs(at_most: int | None = None) -> sa.CompoundSelect[tuple[int]]:
    """The ids of a backfill's queued and running runs, one state at a time (each an index range).

    ``at_most`` limits each part, not only their union: PostgreSQL plans the parts of a
    UNION ALL for all their rows, so a limit outside them only may get a bitmap scan that
    collects every queued run before the first is returned."""
    return sa.union_all(*(_runs_in_state(state, at_most) for state in UNFINISHED_RUN_STATES))


# The tick asks these of every backfill on every scheduler loop: each statement is built
# once per limit (a window size, a failed-runs limit: a few distinct values), not per call,
# which was most of a tick's CPU (issue 14).
@functools.lru_cache(maxsize=256)
def _count_unfinished(at_most: int | None) -> sa.Select[int]:
    unfinished = _unfinished_runs(at_most)
    if at_most is not None:
        unfinished = unfinished.limit(at_most)
    return sa.select(sa.func.count()).select_from(unfinished.subquery())


@functools.lru_cache(maxsize=256)
def _count_failed(at_most: int | None) -> sa.Select[int]:
    return sa.select(sa.func.count()).select_from(_runs_in_state("failed", at_most).subquery())


_ANY_UNFINISHED = sa.select(_unfinished_runs(1).limit(1).exists())


async def count_unfinished_runs(
    conn: AsyncConnection, backfill_id: int, *, at_most: int | None = None
) -> int:
    """Queued and running runs of a backfill, counted up to ``at_most`` (None: all of them).

    A tick asks only whether a window has room (``at_most``: the window) or whether any run
    is left (:func:`has_unfinished_runs`), so its cost stays that of the window, not of an
    eager backfill's 100,000 queued runs (issue 14: a full count scanned them every tick).
    """
    return int(await conn.scalar(_count_unfinished(at_most), {"backfill_id": backfill_id}) or 0)


async def count_failed_runs(conn: AsyncConnection, backfill_id: int, *, at_most: int | None = None) -> int:
    """Failed runs of a backfill, counted up to ``at_most`` (the tick asks only whether a limit is reached).

    Filtering on ``backfill_id`` without the sidecar's index scanned the whole table every
    tick (issue 14: 42 ms a tick with 100,000 queued runs).
    """
    return int(await conn.scalar(_count_failed(at_most), {"backfill_id": backfill_id}) or 0)


async def has_unfinished_runs(conn: AsyncConnection, backfill_id: int) -> bool:
    """Whether any run of a backfill is queued or running (an EXISTS: stops at the first)."""
    return bool(await conn.scalar(_ANY_UNFINISHED, {"backfill_id": backfill_id}))


async def run_state_counts(conn: AsyncConnection, backfill_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """``backfill id -> {run state: count}`` (state ``""`` for NULL), in one grouped query."""
    ids = list(backfill_ids)
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    if ids:
        result = await conn.execute(
            sa.select(dag_run.c.backfill_id, dag_run.c.state, sa.func.count())
            .where(dag_run.c.backfill_id.in_(ids))
            .group_by(dag_run.c.backfill_id, dag_run.c.state)
        )
        for backfill_id, run_state, n in result:
            counts[backfill_id][run_state or ""] = int(n)
    return counts


async def fail_runs(
    conn: AsyncConnection,
    backfill_id: int,
    dag_id: str,
    run_states: Sequence[str],
    now: dt.datetime,
    *,
    failed_unended: bool = False,
) -> int:
    """Fail a backfill's runs in ``run_states`` with their task instances; return how many.

    With ``failed_unended``, runs already ``failed`` without an end date are ended the same
    way: Airflow's own cancel fails queued runs so, leaving their task instances without a
    state (a run failed any other way has an end date). Runs inside the caller's
    transaction, so a cancel is all or nothing.
    """
    stopping: sa.ColumnElement[bool] = dag_run.c.state.in_(tuple(run_states))
    if failed_unended:
        stopping = sa.or_(stopping, sa.and_(dag_run.c.state == "failed", dag_run.c.end_date.is_(None)))
    of_backfill = sa.and_(dag_run.c.backfill_id == backfill_id, stopping)
    runs = sa.select(dag_run.c.run_id).where(of_backfill).scalar_subquery()
    of_runs = (task_instance.c.dag_id == dag_id, task_instance.c.run_id.in_(runs))
    ended = {
        "start_date": sa.func.coalesce(task_instance.c.start_date, now),
        "end_date": now,
        "updated_at": now,
    }
    await conn.execute(
        task_instance.update()
        .where(*of_runs, task_instance.c.state.in_(RUNNING_TI_STATES))
        .values(state="failed", **ended)
    )
    await conn.execute(
        task_instance.update()
        .where(
            *of_runs,
            sa.or_(
                task_instance.c.state.is_(None),
                task_instance.c.state.not_in(RUNNING_TI_STATES + FINISHED_TI_STATES),
            ),
        )
        .values(state="skipped", **ended)
    )
    result = await conn.execute(
        dag_run.update().where(of_backfill).values(state="failed", end_date=now, updated_at=now)
    )
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class Slot:
    """One slot of a plan: a written one (``backfill_dag_run``, with its run if one was made),
    a dry run's planned run, or one not written yet."""

    sort_ordinal: int
    logical_date: dt.datetime | None
    """None for a partition's slot (Airflow's partitioned runs have no logical date)."""
    data_interval_start: dt.datetime | None
    data_interval_end: dt.datetime | None
    run_after: dt.datetime | None
    run_id: str
    disposition: Disposition | None
    """None for a skip reason (``exception_reason``) this release does not know."""
    dag_run_id: int | None = None
    state: str | None = None
    partition_key: str | None = None
    partition_date: dt.datetime | None = None
    """The partition's date: from its run (a skipped partition's slot has no run to say it)."""


def _disposition(exception_reason: str | None, clear_number: int | None) -> Disposition | None:
    if exception_reason:
        try:
            return Disposition(exception_reason)
        except ValueError:
            return None
    if clear_number and clear_number > 0:
        return Disposition.REPROCESS
    return Disposition.CREATE


async def written_slots(
    conn: AsyncConnection, backfill_id: int, after_ordinal: int, limit: int
) -> list[Slot]:
    """Written slots in plan order, each with its run or the reason none was made."""
    result = await conn.execute(
        sa.select(
            backfill_dag_run.c.sort_ordinal,
            backfill_dag_run.c.logical_date,
            backfill_dag_run.c.exception_reason,
            backfill_dag_run.c.dag_run_id,
            dag_run.c.run_id,
            dag_run.c.state,
            dag_run.c.data_interval_start,
            dag_run.c.data_interval_end,
            dag_run.c.run_after,
            dag_run.c.clear_number,
            backfill_dag_run.c.partition_key,
            dag_run.c.partition_date,
        )
        .select_from(backfill_dag_run.outerjoin(dag_run, dag_run.c.id == backfill_dag_run.c.dag_run_id))
        .where(backfill_dag_run.c.backfill_id == backfill_id, backfill_dag_run.c.sort_ordinal > after_ordinal)
        .order_by(backfill_dag_run.c.sort_ordinal)
        .limit(limit)
    )
    return [
        Slot(
            sort_ordinal=r.sort_ordinal,
            logical_date=r.logical_date,
            data_interval_start=r.data_interval_start,
            data_interval_end=r.data_interval_end,
            run_after=r.run_after,
            run_id=r.run_id or "",
            disposition=_disposition(r.exception_reason, r.clear_number),
            dag_run_id=r.dag_run_id,
            state=r.state,
            partition_key=r.partition_key,
            partition_date=r.partition_date,
        )
        for r in result
    ]


async def _counted_rows(conn: AsyncConnection, tables: Sequence[str]) -> dict[str, float]:
    """The rows each table's statistics count: -1 without statistics, infinite when not this role's.

    The count is ``pg_class.reltuples``, and a table counts as analysed only when
    ``pg_stats`` has any row for it. ANALYZE writes ``reltuples`` (and ``last_analyze``) in
    place, so they outlive the rollback of the transaction that ran it, while its column
    statistics go with it (a create whose first batch analysed ``dag_run`` and then failed
    left no statistics and ``reltuples`` counting that batch: the next create of 1,500 runs
    was never analysed). Any ``pg_stats`` row, not the planned columns': a column with
    ``SET STATISTICS 0`` or hidden by column grants has none.

    Not ``least(reltuples, n_live_tup)``, though it would also see a rolled-back ANALYZE
    over earlier statistics (10 runs analysed, then 1,000 more rolled back: ``reltuples``
    1,010 with the statistics of 10): ``n_live_tup`` is 0 after a statistics reset, a crash
    or in a database made from a template, and lags commits by up to a second, so a database
    with history then analysed ``task_instance`` on every large create (0.1-0.5 s: eager
    1,000 x 10 over 20,000 runs of history went from 1.2x to 1.5x the ceiling).

    A table this role does not own (or is not a member of its owner) cannot be analysed
    (ANALYZE only warns): it counts as infinitely many rows, never outgrown.
    """
    result = await conn.execute(
        sa.text(
            # Correlated, so that pg_stats is read by index (a join scans pg_attribute: 1.2 ms, not 0.1).
            "SELECT c.relname, CASE WHEN NOT pg_has_role(c.relowner, 'USAGE') THEN 'infinity'"
            " WHEN EXISTS(SELECT FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)"
            " THEN c.reltuples ELSE -1 END"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = ANY(CAST(:tables AS regclass[]))"
        ),
        {"tables": list(tables)},
    )
    counted = {name: float(rows) for name, rows in result}
    _tell_not_owned(name for name, rows in counted.items() if math.isinf(rows))
    return counted


#: The tables already said to be another role's (said once per process).
_NOT_OWNED_TOLD: set[str] = set()


def _tell_not_owned(tables: Iterable[str]) -> None:
    if untold := sorted(set(tables) - _NOT_OWNED_TOLD):
        _NOT_OWNED_TOLD.update(untold)
        log.info(
            "tables %s belong to another role: not analysed by the sidecar (autovacuum or their owner does)",
            ", ".join(untold),
        )


async def counted_runs(conn: AsyncConnection) -> int | None:
    """The runs ``dag_run``'s statistics count (0 without statistics; :func:`_counted_rows`),
    None when this role cannot analyse it (it is another role's)."""
    counted = (await _counted_rows(conn, ["dag_run"])).get("dag_run", 0.0)
    return None if math.isinf(counted) else max(0, int(counted))


async def analyze_runs_if_outgrown(conn: AsyncConnection, *, runs_written: int, growth: int) -> bool:
    """``ANALYZE dag_run`` in the caller's transaction when the backfill outgrew its statistics.

    Called by a batch between the insert of its runs and the ``COPY`` of their task
    instances. Each task instance's foreign-key check (``SELECT 1 FROM dag_run WHERE
    dag_id = $1 AND run_id = $2 FOR KEY SHARE``) is planned at the batch's first row and
    cached for the connection. While ``dag_run`` was never analysed (an empty database),
    the planner cannot tell the ``(dag_id)`` index from the unique ``(dag_id, run_id)``
    one (both cost one row) and takes ``idx_dag_run_dag_id``: every check then walks every
    run of the DAG and filters on ``run_id`` (``auto_explain``: 286-328 rows removed per
    check in the second batch of 250 runs), so the first batches wrote task instances
    2-3x slower per row than later ones, and the one-transaction ceilings are quadratic.
    ANALYZE sees this transaction's own uncommitted rows and invalidates the cached plan,
    so the checks of this batch already use the unique index.

    ``SKIP_LOCKED``: a table another session is vacuuming or analysing is skipped, not
    waited for (ANALYZE holds its SHARE UPDATE EXCLUSIVE lock until this batch commits,
    which blocks no reader or writer).

    Args:
        conn: The batch's connection, inside its transaction.
        runs_written: The backfill's runs including this batch's (its last slot's ordinal).
        growth: Analyse when ``runs_written`` exceeds ``growth`` times the runs the
            statistics count (:func:`counted_runs`; without statistics, none; never
            when ``dag_run`` is another role's).

    Returns:
        Whether ``dag_run`` was analysed.
    """
    counted = await counted_runs(conn)
    if counted is None or runs_written <= growth * counted:
        return False
    await conn.execute(sa.text("ANALYZE (SKIP_LOCKED) dag_run"))
    return True


@dataclass(frozen=True)
class TableAnalysis:
    """What :func:`analyze_written_tables` analysed, and what it had to skip."""

    analysed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    """Outgrown, but held by another session (autovacuum, a manual VACUUM or ANALYZE): left
    as they were."""


async def analyze_written_tables(
    conn: AsyncConnection, *, everything: bool, runs_written: int, only: Collection[str] | None = None
) -> TableAnalysis:
    """``ANALYZE`` the tables a backfill grows whose statistics it has outgrown, so that plans see its rows.

    A brand-new DAG's runs are invisible to the planner's statistics: the foreign-key
    checks of ``task_instance -> dag_run`` (plans cached per connection) and the
    scheduler's per-DAG queries then scan ``dag_run`` sequentially, which makes a
    large backfill quadratic (5,000 runs x 10 tasks: 28 s instead of 5 s here).
    ANALYZE refreshes the statistics and invalidates those cached plans; it only takes
    a SHARE UPDATE EXCLUSIVE lock, so writers and the scheduler carry on.

    A table is analysed only when its statistics would change a plan: when the rows the
    backfill wrote outnumber the rows its statistics count (:func:`_counted_rows`; -1
    without statistics), i.e. the table more than doubled
    since. On a database with history (20,000 runs) the planner already chooses the
    index scans, and analysing ``task_instance`` there costs about half a second for nothing.

    A table another session holds (autovacuum, a manual VACUUM or ANALYZE) is skipped, never
    waited for: its ``SHARE UPDATE EXCLUSIVE`` lock (the one ANALYZE takes) is tried
    ``NOWAIT`` in a savepoint first. A table another role owns is neither analysed nor
    skipped (:func:`_counted_rows`).

    Args:
        conn: A connection in a transaction of its own.
        everything: Also ``task_instance`` and ``backfill_dag_run`` (the first time);
            later, only the cheap ``dag_run`` (one row per run): once batches commit,
            autovacuum's own ANALYZE keeps up with ``task_instance``, and analysing
            millions of its rows costs more than it saves (0.6 s of 6.7 s at 5,000 runs).
        runs_written: The runs (one ``dag_run`` and ``backfill_dag_run`` row each, and at
            least one task instance) the backfill wrote so far.
        only: Of those, only these (a retry of the tables skipped before).

    Returns:
        The tables analysed, and those skipped.
    """
    tables = ["dag_run", "task_instance", "backfill_dag_run"] if everything else ["dag_run"]
    if only is not None:
        tables = [table for table in tables if table in only]
    counted = await _counted_rows(conn, tables)
    stale = [table for table in tables if counted.get(table, -1.0) < runs_written]
    analysed: list[str] = []
    skipped: list[str] = []
    for table in stale:
        try:
            # One savepoint per table: a table held elsewhere, or one whose analysis fails (an
            # expression index that raises, a statement_timeout), leaves the others analysed.
            async with conn.begin_nested():
                await conn.execute(sa.text(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT"))
                await conn.execute(sa.text(f"ANALYZE {table}"))  # the lock it takes is held already
        except sa.exc.DBAPIError as exc:
            failure = classify(exc)
            if failure is Failure.LOCK_NOT_AVAILABLE:
                skipped.append(table)
            elif failure is Failure.CONNECTION:
                raise
            else:
                log.warning("analysing %s failed (%s): left to autovacuum", table, failure.value)
            continue
        analysed.append(table)
    return TableAnalysis(tuple(analysed), tuple(skipped))
