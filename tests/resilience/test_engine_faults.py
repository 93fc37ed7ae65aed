"""Interrupted creations resume, concurrent replicas never write twice, cancel leaves nothing behind.

Engine-level, against the real Airflow 3.3.2 schema on PostgreSQL: several engines with
their own connection pools stand in for sidecar replicas (the locks they take are the
database's, exactly as between processes).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, Mode
from sidecar.engine._create import insert
from sidecar.engine._materialize import materialize_batch

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

UTC = dt.UTC
ONE_TASK = "sidecar_it_params"  # @daily, one task
THREE = "sidecar_e2e_three"  # @daily, three tasks


def _spec(dag_id: str, days: int, **kw: object) -> BackfillSpec:
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    return BackfillSpec(  # type: ignore[arg-type]
        dag_id=dag_id, from_date=start, to_date=start + dt.timedelta(days=days - 1), **kw
    )


def _check_intact(sql: psycopg2.extensions.cursor, backfill_id: int, planned: int, tasks: int) -> None:
    sql.execute(
        "SELECT count(*), count(DISTINCT logical_date) FROM dag_run WHERE backfill_id = %s", (backfill_id,)
    )
    assert sql.fetchone() == (planned, planned)
    sql.execute(
        "SELECT count(*) FROM dag_run r WHERE r.backfill_id = %s AND (SELECT count(*) FROM task_instance ti"
        " WHERE ti.dag_id = r.dag_id AND ti.run_id = r.run_id) <> %s",
        (backfill_id, tasks),
    )
    assert sql.fetchone() == (0,)
    sql.execute(
        "SELECT count(*), count(DISTINCT sort_ordinal), max(sort_ordinal) FROM backfill_dag_run"
        " WHERE backfill_id = %s AND dag_run_id IS NOT NULL",
        (backfill_id,),
    )
    assert sql.fetchone() == (planned, planned, planned)
    sql.execute(
        "SELECT written_count, phase FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s",
        (backfill_id,),
    )
    assert sql.fetchone() == (planned, "materialized")


async def _insert_only(engine: BackfillEngine, spec: BackfillSpec) -> int:
    """A backfill's rows without a batch (what a crash between them left before they became one transaction)."""
    async with engine.db.engine.connect() as conn:
        loaded = await engine.catalog.load(conn, spec.dag_id)
    assert loaded is not None
    from sidecar.engine._plans import build_plan

    now = dt.datetime.now(UTC)
    plan = build_plan(loaded.template.timetable, spec.dag_id, spec.from_date, spec.to_date, False, now)
    created = await insert(engine._parts, spec, loaded.template.timetable, plan.count(), now, None, "x", 0)
    assert created is not None
    backfill_id, first = created
    assert first is None  # no run wanted: no first batch
    return backfill_id


async def test_creation_interrupted_before_the_first_batch_is_resumed_by_the_next_tick(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _insert_only(engine, _spec(ONE_TASK, 10, max_active_runs=2))
    sql.execute("SELECT count(*) FROM dag_run")
    assert sql.fetchone() == (0,)
    result = await engine.tick()
    assert backfill_id in result.materializing
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (backfill_id,))
    assert sql.fetchone() == (3,)  # max_active_runs 2 + lookahead 1


async def test_eager_creation_interrupted_mid_way_is_finished_by_ticks(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _insert_only(engine, _spec(THREE, 20, mode=Mode.EAGER))
    async with engine.db.engine.begin() as conn:  # one batch committed, then the "crash"
        await materialize_batch(conn, engine.catalog, backfill_id, max_runs=4, now=dt.datetime.now(UTC))
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (backfill_id,))
    assert sql.fetchone() == (4,)
    await engine.tick()
    _check_intact(sql, backfill_id, 20, 3)


async def test_concurrent_creates_with_one_request_id_create_one_backfill(
    replicas: list[BackfillEngine], sql: psycopg2.extensions.cursor
) -> None:
    spec = _spec(THREE, 30, max_active_runs=3)
    views = await asyncio.gather(*(e.create(spec, request_id="same-request") for e in replicas * 2))
    ids = {v.id for v in views if not isinstance(v, DryRun)}
    assert len(ids) == 1
    sql.execute("SELECT count(*) FROM backfill")
    assert sql.fetchone() == (1,)
    sql.execute("SELECT count(*) FROM dag_run")
    assert sql.fetchone() == (4,)  # one window (3 + lookahead 1), written once


async def test_concurrent_ticks_and_materialisers_never_write_twice(
    replicas: list[BackfillEngine], sql: psycopg2.extensions.cursor
) -> None:
    windowed = await replicas[0].create(_spec(THREE, 40, max_active_runs=5))
    eager_id = await _insert_only(replicas[0], _spec(ONE_TASK, 300, mode=Mode.EAGER))
    assert not isinstance(windowed, DryRun)
    for _ in range(6):
        # Every replica ticks at once, hard, while runs finish between rounds.
        await asyncio.gather(*(e.tick() for e in replicas for _ in range(3)))
        sql.execute(
            "UPDATE dag_run SET state = 'success' WHERE backfill_id = %s AND state = 'queued'", (windowed.id,)
        )
    for _ in range(10):
        await asyncio.gather(*(e.tick() for e in replicas))
        sql.execute(
            "UPDATE dag_run SET state = 'success' WHERE backfill_id = %s AND state = 'queued'", (windowed.id,)
        )
    _check_intact(sql, eager_id, 300, 1)
    sql.execute(
        "SELECT count(*), count(DISTINCT logical_date) FROM dag_run WHERE backfill_id = %s", (windowed.id,)
    )
    assert sql.fetchone() == (40, 40)
    await asyncio.gather(*(e.tick() for e in replicas))
    sql.execute("SELECT completed_at IS NOT NULL FROM backfill WHERE id = %s", (windowed.id,))
    assert sql.fetchone() == (True,)


async def test_cancel_fails_queued_runs_and_lets_running_ones_finish(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(_spec(THREE, 10, max_active_runs=2))
    assert not isinstance(view, DryRun)
    running = _start_first_run(sql, view.id)
    await engine.cancel(view.id)
    sql.execute(
        "SELECT run_id, state, end_date IS NOT NULL FROM dag_run WHERE backfill_id = %s ORDER BY run_id",
        (view.id,),
    )
    rows = sql.fetchall()
    assert rows[0] == (running, "running", False)
    assert {r[1:] for r in rows[1:]} == {("failed", True)}
    sql.execute(
        "SELECT ti.run_id = %s, ti.state FROM task_instance ti JOIN dag_run r ON r.run_id = ti.run_id"
        " WHERE r.backfill_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
        (running, view.id),
    )
    assert sql.fetchall() == [(False, "skipped"), (True, "running"), (True, None)]
    sql.execute("SELECT completed_at IS NOT NULL, is_paused FROM backfill WHERE id = %s", (view.id,))
    assert sql.fetchone() == (True, False)


async def test_cancel_with_terminate_running_stops_running_runs_like_mark_failed(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(_spec(THREE, 10, max_active_runs=2))
    assert not isinstance(view, DryRun)
    running = _start_first_run(sql, view.id)
    sql.execute(
        "UPDATE task_instance SET state = 'success' WHERE run_id = %s AND task_id = 'first'", (running,)
    )
    sql.execute(
        "UPDATE task_instance SET state = 'running' WHERE run_id = %s AND task_id = 'second'", (running,)
    )
    await engine.cancel(view.id, terminate_running=True)
    sql.execute(
        "SELECT task_id, state, end_date IS NOT NULL FROM task_instance WHERE run_id = %s ORDER BY task_id",
        (running,),
    )
    assert sql.fetchall() == [
        ("first", "success", False),
        ("second", "failed", True),
        ("third", "skipped", True),
    ]
    sql.execute(
        "SELECT count(*) FROM dag_run WHERE backfill_id = %s AND (state <> 'failed' OR end_date IS NULL)",
        (view.id,),
    )
    assert sql.fetchone() == (0,)
    # Nothing is written after a cancel, whatever ticks.
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (view.id,))
    before = sql.fetchone()
    await engine.tick()
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (view.id,))
    assert sql.fetchone() == before


def _start_first_run(sql: psycopg2.extensions.cursor, backfill_id: int) -> str:
    sql.execute(
        "UPDATE dag_run SET state = 'running', start_date = now() WHERE id = (SELECT min(id) FROM dag_run"
        " WHERE backfill_id = %s) RETURNING run_id",
        (backfill_id,),
    )
    run_id: str = sql.fetchone()[0]
    sql.execute(
        "UPDATE task_instance SET state = 'running' WHERE run_id = %s AND task_id = 'first'", (run_id,)
    )
    return run_id
