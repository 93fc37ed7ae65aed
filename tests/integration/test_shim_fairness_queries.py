"""The shim's fairness queries: what they read, and that they pick what the first formulation picked.

Run in this process against a real Airflow 3.3.2 schema on PostgreSQL (the queries are
SQLAlchemy over Airflow's models; no scheduler is needed to ask them):

- the running backfill runs Airflow's per-loop limit left out are found by index probes per
  running run: with 4,000 queued and 2,000 finished runs per backfill they read the rows and
  pages they read with 200 (the link to ``backfill_dag_run`` once read that table's unique
  index whole for every running run);
- over random mixes of backfills, states, pauses, priorities, caps, ``seen`` sets and runs
  another transaction holds locked, both queries return exactly the runs, in the order, that
  the first formulation (kept here as the oracle) returned.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Collection, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, Controls, EngineConfig, Mode
from sidecar.store import Database
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

DAGS = ("sidecar_it_params", "sidecar_it_interval")  # both @daily
START = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def session(clean_db: AirflowDatabase) -> Iterator[Session]:
    """A synchronous ORM session on the test database, as the scheduler's."""
    engine = sa.create_engine(clean_db.psycopg2_url)
    try:
        with Session(engine) as s:
            yield s
    finally:
        engine.dispose()


def _explained(session: Session, run: Any) -> list[dict[str, Any]]:
    """The executed plans (``EXPLAIN (ANALYZE, BUFFERS)``) of the SELECTs ``run()`` sends."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
        session.rollback()
    plans = []
    cursor = session.connection().connection.cursor()
    for statement, parameters in sent:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
        row = cursor.fetchone()
        assert row is not None
        plans.append(row[0][0]["Plan"])
    session.rollback()
    return plans


def _rows_read(plan: dict[str, Any]) -> int:
    own = 0
    if plan["Node Type"].endswith("Scan"):
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * plan["Actual Loops"]
    return own + sum(_rows_read(child) for child in plan.get("Plans", []))


def _pages(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))


async def _backfills(engine: BackfillEngine, days: int, count: int) -> list[int]:
    """``count`` eager backfills of ``days`` daily runs each, over both DAGs, all runs queued."""
    ids = []
    for i in range(count):
        first = START + dt.timedelta(days=(i // len(DAGS)) * days)
        view = await engine.create(
            BackfillSpec(
                dag_id=DAGS[i % len(DAGS)],
                from_date=first,
                to_date=first + dt.timedelta(days=days - 1),
                max_active_runs=5,
                mode=Mode.EAGER,
                controls=Controls(concurrent=True),
            )
        )
        assert isinstance(view, BackfillView)
        ids.append(view.id)
    return ids


def _reset(sql: psycopg2.extensions.cursor) -> None:
    sql.execute("DELETE FROM task_instance; DELETE FROM backfill_dag_run; DELETE FROM dag_run")
    sql.execute("DELETE FROM airflow_sidecar.sidecar_backfill; DELETE FROM backfill")
    sql.execute("UPDATE dag SET is_paused = false")


async def _left_out_running_reads(
    database: Database, sql: psycopg2.extensions.cursor, session: Session, queued: int
) -> tuple[int, int]:
    from airflow.utils.state import DagRunState

    from airflow_shim._fairness import backfill_runs_left_out

    _reset(sql)
    engine = BackfillEngine(database, EngineConfig())
    await _backfills(engine, queued + queued // 2 + 3, 2)
    for state, n in (("success", queued // 2), ("running", 3)):  # in plan order, per backfill
        sql.execute(
            "UPDATE dag_run SET state = %s WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
            "(PARTITION BY backfill_id ORDER BY logical_date) AS n FROM dag_run WHERE state = 'queued') AS r "
            "WHERE n <= %s)",
            (state, n),
        )
    sql.execute("VACUUM ANALYZE dag_run")
    sql.execute("VACUUM ANALYZE backfill_dag_run")
    picked: list[int] = []
    plans = _explained(
        session,
        lambda: picked.extend(r.id for r in backfill_runs_left_out(session, DagRunState.RUNNING, set(), 50)),
    )
    assert len(picked) == 6
    assert len(plans) == 1
    return _rows_read(plans[0]), _pages(plans[0])


async def test_left_out_running_runs_are_found_by_what_is_running_not_the_backlog(
    database: Database, sql: psycopg2.extensions.cursor, session: Session
) -> None:
    small = await _left_out_running_reads(database, sql, session, 200)
    large = await _left_out_running_reads(database, sql, session, 4_000)
    assert large[0] == small[0], (small, large)
    assert large[1] <= small[1] + 12, (small, large)  # a level more in some B-trees, no more


def _first_ranked(state: Any, seen: Collection[int], *columns: Any) -> Any:
    """The oracle: ``_ranked`` as first written (``backfill_dag_run`` joined on ``dag_run_id`` only)."""
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun

    ranked = (
        sa.select(
            DagRun.id.label("id"),
            sa.func.row_number()
            .over(partition_by=DagRun.backfill_id, order_by=BackfillDagRun.sort_ordinal)
            .label("turn"),
            DagRun.backfill_id.label("backfill_id"),
            *columns,
        )
        .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
        .join(Backfill, Backfill.id == DagRun.backfill_id)
        .join(DagModel, DagModel.dag_id == DagRun.dag_id)
        .where(
            DagRun.state == state,
            DagRun.run_after <= sa.func.now(),
            DagModel.is_paused == sa.false(),
            DagModel.is_stale == sa.false(),
            Backfill.is_paused == sa.false(),
        )
    )
    return ranked.where(DagRun.id.not_in(list(seen))) if seen else ranked


def _first_left_out(session: Session, state: Any, seen: Collection[int], limit: int) -> list[Any]:
    """The oracle: ``backfill_runs_left_out`` as first written."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.sqlalchemy import with_row_locks

    if limit <= 0:
        return []
    sub = _first_ranked(state, seen).subquery()
    query = (
        sa.select(DagRun)
        .join(sub, sub.c.id == DagRun.id)
        .order_by(sub.c.turn, sub.c.backfill_id)
        .limit(limit)
    )
    return list(session.scalars(with_row_locks(query, of=DagRun, session=session, skip_locked=True)))


def _first_prioritized(session: Session, seen: Collection[int], limit: int) -> list[Any]:
    """The oracle: ``prioritized_backfill_runs`` as first written."""
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.sqlalchemy import with_row_locks
    from airflow.utils.state import DagRunState

    from airflow_shim._fairness import _controls_table, _running_backfill_runs_per_dag

    if limit <= 0:
        return []
    t = _controls_table(session)
    running = (
        sa.select(DagRun.backfill_id.label("backfill_id"), sa.func.count(DagRun.id).label("n"))
        .where(DagRun.state == DagRunState.RUNNING, DagRun.backfill_id.is_not(None))
        .group_by(DagRun.backfill_id)
        .subquery()
    )
    sub = (
        _first_ranked(
            DagRunState.QUEUED,
            seen,
            sa.func.coalesce(t.c.priority, 0).label("priority"),
            (Backfill.max_active_runs - sa.func.coalesce(running.c.n, 0)).label("room"),
            t.c.dag_max_active_runs.label("dag_cap"),
        )
        .outerjoin(t, t.c.backfill_id == DagRun.backfill_id)
        .outerjoin(running, running.c.backfill_id == DagRun.backfill_id)
        .subquery()
    )
    query = (
        sa.select(DagRun, sub.c.dag_cap)
        .join(sub, sub.c.id == DagRun.id)
        .where(sub.c.turn <= sub.c.room)
        .order_by(sub.c.priority.desc(), sub.c.turn, sub.c.backfill_id)
        .limit(min(limit * 4, limit + 200))
    )
    candidates = list(session.execute(with_row_locks(query, of=DagRun, session=session, skip_locked=True)))
    capped = {run.dag_id for run, cap in candidates if cap is not None}
    dag_running = _running_backfill_runs_per_dag(session, capped) if capped else {}
    chosen: list[Any] = []
    for run, cap in candidates:
        if len(chosen) >= limit:
            break
        if cap is not None and dag_running.get(run.dag_id, 0) >= cap:
            continue
        dag_running[run.dag_id] = dag_running.get(run.dag_id, 0) + 1
        chosen.append(run)
    return chosen


def _shuffle(sql: psycopg2.extensions.cursor, rng: random.Random, backfills: list[int]) -> None:
    """A random mix: states, due or not, paused backfills and DAGs, max_active_runs, priorities, caps."""
    sql.execute("SELECT id FROM dag_run")
    for (run_id,) in sql.fetchall():
        state = rng.choice(("queued", "queued", "queued", "running", "success", "failed"))
        later = rng.random() < 0.1
        sql.execute(
            "UPDATE dag_run SET state = %s, run_after = CASE WHEN %s THEN now() + interval '1 day' "
            "ELSE logical_date END WHERE id = %s",
            (state, later, run_id),
        )
    for backfill_id in backfills:
        sql.execute(
            "UPDATE backfill SET is_paused = %s, max_active_runs = %s WHERE id = %s",
            (rng.random() < 0.15, rng.randint(1, 6), backfill_id),
        )
        sql.execute(
            "UPDATE airflow_sidecar.sidecar_backfill SET priority = %s, dag_max_active_runs = %s "
            "WHERE backfill_id = %s",
            (rng.choice((None, 0, 0, 5, 10)), rng.choice((None, None, 1, 3, 8)), backfill_id),
        )
    for dag_id in DAGS:
        sql.execute("UPDATE dag SET is_paused = %s WHERE dag_id = %s", (rng.random() < 0.1, dag_id))


@pytest.mark.timeout(600)
async def test_the_picks_are_those_of_the_first_formulation(
    database: Database,
    sql: psycopg2.extensions.cursor,
    session: Session,
    clean_db: AirflowDatabase,
) -> None:
    from airflow.utils.state import DagRunState

    from airflow_shim import _fairness

    _reset(sql)
    engine = BackfillEngine(database, EngineConfig())
    backfills = await _backfills(engine, 9, 5)
    locker = psycopg2.connect(clean_db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    picked_some = 0
    try:
        for seed in range(40):
            rng = random.Random(seed)
            _shuffle(sql, rng, backfills)
            sql.execute("SELECT id FROM dag_run")
            ids = [i for (i,) in sql.fetchall()]
            seen = set(rng.sample(ids, rng.randint(0, 8)))
            limit = rng.choice((1, 2, 3, 5, 8, 50))
            locked = rng.sample(ids, rng.randint(0, 6))  # another scheduler's rows: skipped
            with locker.cursor() as cur:
                cur.execute("SELECT id FROM dag_run WHERE id = ANY(%s) FOR UPDATE", (locked,))

            now, first = [], []
            for state in (DagRunState.QUEUED, DagRunState.RUNNING):
                now.append([r.id for r in _fairness.backfill_runs_left_out(session, state, seen, limit)])
                session.rollback()
                first.append([r.id for r in _first_left_out(session, state, seen, limit)])
                session.rollback()
            now.append([r.id for r in _fairness.prioritized_backfill_runs(session, seen, limit)])
            session.rollback()
            first.append([r.id for r in _first_prioritized(session, seen, limit)])
            session.rollback()
            locker.rollback()
            assert now == first, (seed, now, first)
            picked_some += any(now)
    finally:
        locker.close()
    assert picked_some >= 30  # most mixes left something to pick


async def test_a_run_a_later_backfill_reprocessed_is_picked_once_at_its_own_turn(
    database: Database, sql: psycopg2.extensions.cursor, session: Session
) -> None:
    from airflow.utils.state import DagRunState

    from airflow_shim._fairness import backfill_runs_left_out

    _reset(sql)
    earlier, later = await _backfills(BackfillEngine(database, EngineConfig()), 3, 2)
    # As Airflow's reprocessing leaves it: the run now belongs to the later backfill (its
    # backfill_id, a link of the later backfill), and the earlier backfill's link stays.
    sql.execute("SELECT id FROM dag_run WHERE backfill_id = %s ORDER BY logical_date DESC LIMIT 1", (later,))
    (reprocessed,) = sql.fetchone()
    sql.execute(
        "INSERT INTO backfill_dag_run (backfill_id, dag_run_id, sort_ordinal) VALUES (%s, %s, 0)",
        (earlier, reprocessed),
    )
    picked = [r.id for r in backfill_runs_left_out(session, DagRunState.QUEUED, set(), 10)]
    session.rollback()
    sql.execute("SELECT count(*) FROM dag_run")
    assert len(picked) == len(set(picked)) == sql.fetchone()[0]  # 3 + 2 runs, each once
    assert picked.index(reprocessed) == 3  # the later backfill's second turn, not a first of the earlier
    first = [r.id for r in _first_left_out(session, DagRunState.QUEUED, set(), 10)]
    session.rollback()
    assert first.count(reprocessed) == 2  # what the first formulation did: twice
