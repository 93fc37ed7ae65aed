"""The embedded default: the engine on an Airflow 3.3.2 metadata database in SQLite (aiosqlite)."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.engine import (
    BackfillEngine,
    BackfillSpec,
    DryRun,
    EngineConfig,
    Mode,
    ReprocessBehavior,
    State,
    TaskSelection,
)
from sidecar.store import connect, prepare
from tests.support.airflow import airflow_environ, run_airflow
from tests.support.dags import serialize_dags
from tests.support.fixtures import DAGS_FOLDER

pytestmark = [pytest.mark.airflow]

THREE = "sidecar_e2e_three"


def day(d: int) -> dt.datetime:
    return dt.datetime(2025, 1, d, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def sqlite_template(airflow_installed: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow 3.3.2 SQLite metadata database with the test DAGs, migrated once per session."""
    home = tmp_path_factory.mktemp("sqlite-airflow")
    path = home / "airflow.db"
    env = airflow_environ(home, f"sqlite:///{path}", DAGS_FOLDER)
    run_airflow(env, "db", "migrate")
    serialize_dags(env, DAGS_FOLDER, unpause=True)
    return path


@pytest.fixture
def db_path(sqlite_template: Path, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "airflow.db"
    shutil.copy(sqlite_template, path)
    yield path


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[BackfillEngine]:
    db = connect(f"sqlite+aiosqlite:///{db_path}")
    await prepare(db)
    try:
        yield BackfillEngine(db, EngineConfig(batch_size=2, lookahead=1))
    finally:
        await db.dispose()


def rows(path: Path, query: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute(query, params).fetchall())


async def test_windowed_backfill_lifecycle(engine: BackfillEngine, db_path: Path) -> None:
    view = await engine.create(
        BackfillSpec(dag_id=THREE, from_date=day(1), to_date=day(5), max_active_runs=1)
    )
    assert not isinstance(view, DryRun)
    assert (view.progress.planned, view.progress.written, view.progress.queued) == (5, 2, 2)
    assert rows(
        db_path, "SELECT run_id, state, run_type, triggered_by, logical_date FROM dag_run ORDER BY id"
    )[0] == (
        "backfill__2025-01-01T00:00:00+00:00",
        "queued",
        "backfill",
        "BACKFILL",
        "2025-01-01 00:00:00.000000",
    )
    assert rows(db_path, "SELECT count(*) FROM task_instance") == [(6,)]
    for _ in range(5):
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE dag_run SET state = 'success'")
        await engine.tick()
    final = await engine.get(view.id)
    assert final.state is State.COMPLETED
    assert final.progress.succeeded == 5
    assert rows(db_path, "SELECT sort_ordinal FROM backfill_dag_run ORDER BY 1") == [
        (i,) for i in range(1, 6)
    ]
    assert rows(db_path, "SELECT count(DISTINCT id) FROM task_instance") == [(15,)]


async def test_reprocess_and_cancel(engine: BackfillEngine, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
            " span_status, conf) VALUES (?, 'scheduled__x', '2025-01-02 00:00:00.000000',"
            " '2025-01-02 00:00:00.000000', 'failed', 'scheduled', 0, 'not_started', '{}')",
            (THREE,),
        )
        conn.execute(
            "INSERT INTO task_instance (id, dag_id, task_id, run_id, map_index, try_number, max_tries, pool,"
            " pool_slots, state, span_status) VALUES ('0190a1b2c3d4e5f60718293a4b5c6d7e', ?, 'first',"
            " 'scheduled__x', -1, 1, 0, 'default_pool', 1, 'failed', 'not_started')",
            (THREE,),
        )
    view = await engine.create(
        BackfillSpec(
            dag_id=THREE,
            from_date=day(1),
            to_date=day(3),
            reprocess_behavior=ReprocessBehavior.FAILED,
            mode=Mode.EAGER,
        )
    )
    assert not isinstance(view, DryRun)
    assert rows(
        db_path, "SELECT state, backfill_id, clear_number FROM dag_run WHERE run_id = 'scheduled__x'"
    ) == [("queued", view.id, 1)]
    assert rows(db_path, "SELECT task_id, state FROM task_instance_history") == [("first", "failed")]
    cancelled = await engine.cancel(view.id)
    assert cancelled.state is State.CANCELLED
    assert rows(db_path, "SELECT DISTINCT state FROM dag_run") == [("failed",)]


async def test_task_subset_on_sqlite(engine: BackfillEngine, db_path: Path) -> None:
    selection = TaskSelection(task_ids=("second",), include_downstream=True)
    view = await engine.create(
        BackfillSpec(
            dag_id=THREE, from_date=day(1), to_date=day(3), max_active_runs=1, task_selection=selection
        )
    )
    assert not isinstance(view, DryRun)
    assert (view.task_selection, view.selected_task_ids) == (selection, ("second", "third"))
    for _ in range(3):  # later batches, written by ticks, read the recorded selection
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE dag_run SET state = 'success'")
        await engine.tick()
    assert rows(db_path, "SELECT task_id, state, count(*) FROM task_instance GROUP BY 1, 2 ORDER BY 1") == [
        ("first", "removed", 3),
        ("second", None, 3),
        ("third", None, 3),
    ]
    assert (await engine.get(view.id)).selected_task_ids == ("second", "third")


async def test_eager_create_and_its_retry_answer_once_every_run_is_committed(
    engine: BackfillEngine, db_path: Path
) -> None:
    """The eager contract on SQLite: a retry and the timer's ticks race the first call, many times."""
    import asyncio

    ticker, retrier = BackfillEngine(engine.db, engine.config), BackfillEngine(engine.db, engine.config)
    for iteration in range(6):
        start = dt.datetime(2001 + iteration, 1, 1, tzinfo=dt.UTC)
        spec = BackfillSpec(
            dag_id=THREE, from_date=start, to_date=start + dt.timedelta(days=29), mode=Mode.EAGER
        )
        stop = asyncio.Event()

        async def hammer(stop: asyncio.Event) -> None:
            while not stop.is_set():
                await ticker.tick()
                await asyncio.sleep(0)

        ticks = asyncio.create_task(hammer(stop))
        first = asyncio.create_task(engine.create(spec, request_id=f"eager-{iteration}"))
        try:
            for _ in range(10_000):  # retry once the first call's backfill is visible
                if first.done() or rows(db_path, "SELECT id FROM backfill WHERE completed_at IS NULL"):
                    break
                await asyncio.sleep(0.001)
            for view in (await retrier.create(spec, request_id=f"eager-{iteration}"), await first):
                assert not isinstance(view, DryRun)
                assert rows(db_path, "SELECT count(*) FROM dag_run WHERE backfill_id = ?", view.id) == [(30,)]
                assert rows(db_path, "SELECT phase FROM sidecar_backfill WHERE backfill_id = ?", view.id) == [
                    ("materialized",)
                ]
        finally:
            stop.set()
            await ticks
        with sqlite3.connect(db_path) as conn:
            conn.execute(
                "UPDATE backfill SET completed_at = '2030-01-01 00:00:00' WHERE completed_at IS NULL"
            )


async def test_the_warm_up_writes_nothing_on_sqlite(engine: BackfillEngine, db_path: Path) -> None:
    """SQLite cannot roll a rehearsal back (releasing its first savepoint commits), so none runs."""
    tables = ("backfill", "dag_run", "task_instance", "backfill_dag_run", "sidecar_backfill")
    before = {table: rows(db_path, f"SELECT count(*) FROM {table}") for table in tables}
    assert not await engine.warm_up()
    assert {table: rows(db_path, f"SELECT count(*) FROM {table}") for table in tables} == before


def test_the_runs_index_exists_on_sqlite(engine: BackfillEngine, db_path: Path) -> None:
    assert rows(db_path, "SELECT sql FROM sqlite_master WHERE name = 'sidecar_dag_run_backfill_state'") == [
        (
            "CREATE INDEX sidecar_dag_run_backfill_state ON dag_run (backfill_id, state) WHERE backfill_id IS NOT NULL",
        )
    ]
