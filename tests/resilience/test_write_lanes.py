"""An eager create's two write lanes: every slot once, whoever else writes, cancels or fails.

Against the real Airflow 3.3.2 schema on PostgreSQL; several engines with their own pools
stand in for sidecar replicas. Batches are tiny (3-7 runs) so that a create crosses many
batch boundaries, and a one-shot fault is a real database error raised by a trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, EngineConfig, Mode, _lanes
from sidecar.engine._lanes import _Batch, _write_batch
from sidecar.engine._materialize import load_pinned, materialize_batch, plan_of, run_context
from sidecar.engine._plans import cursor_of
from sidecar.planning import PlannedRun
from sidecar.store import (
    Database,
    PlanRecord,
    RunContext,
    TableAnalysis,
    _runs,
    analyze_written_tables,
    connect,
    counted_runs,
    latest_log_template_id,
    lock_writers,
    plan_record,
    prepare,
)
from sidecar.vocabulary import ReprocessBehavior
from tests.resilience.test_engine_faults import ONE_TASK, THREE, _check_intact, _insert_only, _spec
from tests.support.fixtures import AirflowDatabase
from tests.support.postgres import PG_USER, asyncpg_url, drop_database, fresh_airflow_database

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

UTC = dt.UTC
HOURLY = "sidecar_it_hourly_utc"  # one task
#: The columns two writers of the same plan must agree on (ids, uuids and clocks differ).
_RUN_COLUMNS = (
    "dag_id, run_id, logical_date, data_interval_start, data_interval_end, run_after, state, run_type,"
    " triggered_by, conf, clear_number, log_template_id, created_dag_version_id, bundle_version"
)
_TI_COLUMNS = (
    "dag_id, run_id, task_id, map_index, state, try_number, max_tries, pool, pool_slots, queue,"
    " priority_weight, operator, custom_operator_name, executor_config, dag_version_id"
)


def _rows(sql: psycopg2.extensions.cursor, backfill_id: int) -> tuple[list[tuple[object, ...]], ...]:
    sql.execute(
        f"SELECT {_RUN_COLUMNS} FROM dag_run WHERE backfill_id = %s ORDER BY logical_date", (backfill_id,)
    )
    runs = sql.fetchall()
    sql.execute(
        f"SELECT {', '.join('ti.' + c.strip() for c in _TI_COLUMNS.split(','))} FROM task_instance ti"
        " JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id WHERE r.backfill_id = %s"
        " ORDER BY ti.run_id, ti.task_id",
        (backfill_id,),
    )
    tis = sql.fetchall()
    sql.execute(
        "SELECT logical_date, sort_ordinal, exception_reason, dag_run_id IS NOT NULL FROM backfill_dag_run"
        " WHERE backfill_id = %s ORDER BY sort_ordinal",
        (backfill_id,),
    )
    return runs, tis, sql.fetchall()


def _wrote_in_lanes(caplog: pytest.LogCaptureFixture) -> bool:
    return any("lanes" in r.getMessage() and r.name == "sidecar.engine._lanes" for r in caplog.records)


async def _lane_set_up(
    engine: BackfillEngine, backfill_id: int
) -> tuple[PlanRecord, RunContext, list[PlannedRun]]:
    """What a lane's batch of ``backfill_id`` is written with: its plan record, run context and slots."""
    async with engine.db.engine.connect() as conn:
        record = await plan_record(conn, backfill_id)
        assert record is not None
        loaded = await load_pinned(conn, engine.catalog, record)
        assert loaded is not None
        ctx = run_context(record, loaded, await latest_log_template_id(conn))
    return record, ctx, list(plan_of(record).runs())


async def test_lanes_write_the_rows_one_batch_at_a_time_writes(
    engine: BackfillEngine,
    database: Database,
    sql: psycopg2.extensions.cursor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sidecar.engine._lanes")
    in_lanes = await engine.create(_spec(THREE, 40, mode=Mode.EAGER))
    assert _wrote_in_lanes(caplog)
    assert not isinstance(in_lanes, DryRun)
    lanes_rows = _rows(sql, in_lanes.id)
    await engine.cancel(in_lanes.id)
    sql.execute("DELETE FROM task_instance; DELETE FROM backfill_dag_run; DELETE FROM dag_run")
    serial = BackfillEngine(database, EngineConfig(batch_size=3, lookahead=1, lane_creates=0))
    caplog.clear()
    one_by_one = await serial.create(_spec(THREE, 40, mode=Mode.EAGER))
    assert not isinstance(one_by_one, DryRun)
    assert not _wrote_in_lanes(caplog)
    assert _rows(sql, one_by_one.id) == lanes_rows
    assert len(lanes_rows[0]) == 40 and len(lanes_rows[1]) == 120
    assert in_lanes.progress.written == one_by_one.progress.written == 40
    # The lanes wrote it (not batch by batch after a first refusal): no hand-over was logged.
    assert not [r for r in caplog.records if "a lane's batch failed" in r.getMessage()]


async def test_lanes_write_every_slot_once_while_replicas_tick_and_retry_the_create(
    replicas: list[BackfillEngine], sql: psycopg2.extensions.cursor
) -> None:
    spec = _spec(ONE_TASK, 400, mode=Mode.EAGER)
    create = asyncio.create_task(replicas[0].create(spec, request_id="lanes"))

    async def race() -> None:
        while not create.done():
            await asyncio.gather(
                *(e.tick() for e in replicas[1:]),
                replicas[1].create(spec, request_id="lanes"),  # a retried create joins in, batch by batch
            )

    await asyncio.gather(create, race())
    view = create.result()
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 400, 1)
    sql.execute("SELECT count(*) FROM backfill_dag_run WHERE backfill_id = %s", (view.id,))
    assert sql.fetchone() == (400,)


async def test_a_cancel_stops_the_lanes_within_a_batch(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    create = asyncio.create_task(engine.create(_spec(ONE_TASK, 3000, mode=Mode.EAGER)))
    while True:  # the create's first batch committed: the lanes are writing
        sql.execute("SELECT id FROM backfill")
        if (row := sql.fetchone()) is not None:
            break
        await asyncio.sleep(0.01)
    await engine.cancel(row[0])
    await create
    sql.execute(
        "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FROM dag_run WHERE backfill_id = %s",
        (row[0],),
    )
    queued, runs = sql.fetchone()
    assert queued == 0  # no lane committed runs after the cancel failed the queued ones
    assert runs < 3000
    sql.execute(
        "SELECT written_count, phase FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s", (row[0],)
    )
    assert sql.fetchone() == (runs, "cancelled")


async def test_a_failing_lane_hands_the_rest_to_single_batches(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor, caplog: pytest.LogCaptureFixture
) -> None:
    # A one-shot fault: the fifth insert into dag_run fails, with an error no retry helps.
    sql.execute("CREATE SEQUENCE IF NOT EXISTS lanes_fault; SELECT setval('lanes_fault', 1, false)")
    sql.execute(
        "CREATE OR REPLACE FUNCTION lanes_fault() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF nextval('lanes_fault') = 5 THEN RAISE EXCEPTION 'injected' USING ERRCODE = 'XX000'; END IF;"
        " RETURN NULL; END $$"
    )
    sql.execute(
        "CREATE TRIGGER lanes_fault AFTER INSERT ON dag_run FOR EACH STATEMENT EXECUTE FUNCTION lanes_fault()"
    )
    try:
        caplog.set_level(logging.DEBUG, logger="sidecar.engine._lanes")
        view = await engine.create(_spec(THREE, 30, mode=Mode.EAGER))
    finally:
        sql.execute(
            "DROP TRIGGER lanes_fault ON dag_run; DROP FUNCTION lanes_fault(); DROP SEQUENCE lanes_fault"
        )
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 30, 3)
    assert _wrote_in_lanes(caplog)
    assert [r for r in caplog.records if "a lane's batch failed" in r.getMessage()]


async def test_the_tick_skips_a_backfill_whose_lanes_are_writing(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _insert_only(engine, _spec(ONE_TASK, 10, mode=Mode.EAGER))
    async with engine.db.engine.begin() as lane:  # a lane's batch in flight
        await lock_writers(lane, backfill_id, shared=True, wait=True)
        await engine.tick()
        sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (backfill_id,))
        assert sql.fetchone() == (0,)
        async with engine.db.engine.begin() as other:  # the tick's batch refuses to wait
            assert (
                await materialize_batch(
                    other, engine.catalog, backfill_id, max_runs=3, now=dt.datetime.now(UTC)
                )
                is None
            )
    await engine.tick()
    _check_intact(sql, backfill_id, 10, 1)


async def test_a_lane_batch_behind_a_cursor_moved_elsewhere_rolls_back(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    backfill_id = await _insert_only(engine, _spec(THREE, 12, mode=Mode.EAGER))
    record, ctx, slots = await _lane_set_up(engine, backfill_id)
    # Written for the slots after the first three, but nothing wrote the first three.
    ahead = _Batch(slots[3:6], cursor_of(slots[2]), exhausted=False)
    assert (
        await _write_batch(engine.tx, engine.catalog, record, ctx, ahead, None, dt.datetime.now(UTC)) is None
    )
    sql.execute("SELECT count(*) FROM dag_run")
    assert sql.fetchone() == (0,)
    sql.execute(
        "SELECT written_count, cursor FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s",
        (backfill_id,),
    )
    assert sql.fetchone() == (0, None)
    # In its turn, the same batch commits.
    first = _Batch(slots[:3], None, exhausted=False)
    assert (
        await _write_batch(engine.tx, engine.catalog, record, ctx, first, None, dt.datetime.now(UTC))
        is not None
    )
    assert (
        await _write_batch(engine.tx, engine.catalog, record, ctx, ahead, None, dt.datetime.now(UTC))
        is not None
    )
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (backfill_id,))
    assert sql.fetchone() == (6,)


async def test_lanes_are_bounded_per_process(
    database: Database, sql: psycopg2.extensions.cursor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sidecar.engine._lanes")
    engine = BackfillEngine(database, EngineConfig(batch_size=3, lookahead=1, lane_creates=1))
    assert engine._parts.lanes.take()  # another create holds the only place
    view = await engine.create(_spec(THREE, 15, mode=Mode.EAGER))  # one batch at a time
    assert not isinstance(view, DryRun)
    assert not _wrote_in_lanes(caplog)
    _check_intact(sql, view.id, 15, 3)
    engine._parts.lanes.give_back()
    assert engine._parts.lanes.spare == 1


async def test_a_lane_never_queues_behind_a_writer_waiting_for_the_lanes(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    # The review's cycle: a lane batch behind holds the lock shared and waits (in Python) for
    # the batch in front; a retried create waits for the lock exclusively; the batch in front
    # must not queue behind that writer (no database would see the cycle).
    backfill_id = await _insert_only(engine, _spec(THREE, 12, mode=Mode.EAGER))
    record, ctx, slots = await _lane_set_up(engine, backfill_id)
    async with engine.db.engine.begin() as behind:  # the lane batch behind, holding the lock
        await lock_writers(behind, backfill_id, shared=True, wait=True)
        waiting = asyncio.create_task(
            engine.tx.write(
                lambda conn: materialize_batch(
                    conn, engine.catalog, backfill_id, max_runs=3, now=dt.datetime.now(UTC), wait=True
                )
            )
        )
        await asyncio.sleep(0.5)  # the retried create now waits for the lock, exclusively
        assert not waiting.done()
        front = _Batch(slots[:3], None, exhausted=False)
        written = await asyncio.wait_for(
            _write_batch(engine.tx, engine.catalog, record, ctx, front, None, dt.datetime.now(UTC)),
            5,  # well within the lanes' 10 s lock_timeout: it stands back at once
        )
        assert written is None  # it stood back instead of queueing
    result = await asyncio.wait_for(waiting, 20)  # the waiting writer goes on once the lanes stop
    assert result is not None and result.slots_written == 3
    await engine.tick()
    _check_intact(sql, backfill_id, 12, 3)


async def test_a_create_that_reprocesses_runs_writes_one_batch_at_a_time(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor, caplog: pytest.LogCaptureFixture
) -> None:
    first = await engine.create(_spec(THREE, 12, mode=Mode.EAGER))
    assert not isinstance(first, DryRun)
    sql.execute("UPDATE dag_run SET state = 'failed' WHERE backfill_id = %s", (first.id,))
    await engine.cancel(first.id)
    caplog.set_level(logging.DEBUG, logger="sidecar.engine._lanes")
    again = await engine.create(
        _spec(THREE, 12, mode=Mode.EAGER, reprocess_behavior=ReprocessBehavior.FAILED)
    )
    assert not isinstance(again, DryRun)
    assert not _wrote_in_lanes(caplog)
    assert again.progress.written == 12
    sql.execute("SELECT count(*) FROM dag_run WHERE state = 'queued'")
    assert sql.fetchone() == (12,)  # every failed run cleared to run again


async def test_an_eager_create_of_2000_runs_has_its_tables_analysed_when_it_answers(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    # The lanes' last batch finishes the writing before the analysis point comes round in
    # their loop: the create analyses at its end (review finding; 2,000-2,660 runs were missed).
    def analyses() -> int:
        sql.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'task_instance'")
        return int(sql.fetchone()[0])

    before = analyses()
    engine = BackfillEngine(database, EngineConfig(batch_size=1000))
    view = await engine.create(_spec(ONE_TASK, 2100, mode=Mode.EAGER))
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 2100, 1)
    assert analyses() == before + 1


@pytest.fixture
async def never_analysed(
    airflow_dags_template: tuple[str, tuple[str, ...]], clean_db: AirflowDatabase
) -> AsyncIterator[tuple[Database, psycopg2.extensions.cursor]]:
    """A database of its own no ANALYZE ever ran on (the module's has statistics by now), and a cursor."""
    name = f"{clean_db.name}_fresh"
    asyncpg_url, psycopg2_url = fresh_airflow_database(name, template=airflow_dags_template[0])
    db = connect(asyncpg_url)
    conn = psycopg2.connect(psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    try:
        await prepare(db)
        with conn.cursor() as cur:
            # Autovacuum's visits would race the states the tests make (it lags on a busy server).
            for table in ("dag_run", "task_instance", "backfill_dag_run"):
                cur.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            yield db, cur
    finally:
        conn.close()
        await db.dispose()
        drop_database(name)


def _statistics(sql: psycopg2.extensions.cursor, table: str) -> tuple[float, int, int]:
    """A table's ``reltuples``, its ``pg_stats`` rows and its (manual) analyses."""
    sql.execute(
        "SELECT c.reltuples, (SELECT count(*) FROM pg_stats s WHERE s.tablename = c.relname),"
        " t.analyze_count FROM pg_class c JOIN pg_stat_user_tables t ON t.relid = c.oid WHERE c.relname = %s",
        (table,),
    )
    reltuples, stats, analyses = sql.fetchone()
    return float(reltuples), int(stats), int(analyses)


async def _a_failed_create_of_1000_runs(db: Database, sql: psycopg2.extensions.cursor) -> None:
    """A create whose first batch (of 1,000 runs, one batch at a time) analyses ``dag_run``,
    then fails (a trigger on ``task_instance``) and rolls back."""
    sql.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'XX000'; END $$;"
        " CREATE TRIGGER refuse AFTER INSERT ON task_instance FOR EACH STATEMENT EXECUTE FUNCTION refuse()"
    )
    with pytest.raises(sa.exc.DBAPIError):
        await BackfillEngine(db, EngineConfig(lane_creates=0)).create(_spec(ONE_TASK, 1000, mode=Mode.EAGER))
    sql.execute("DROP TRIGGER refuse ON task_instance; DROP FUNCTION refuse()")


async def test_a_create_after_a_failed_one_is_analysed_on_its_statistics_not_reltuples(
    never_analysed: tuple[Database, psycopg2.extensions.cursor],
) -> None:
    # Review finding: the failed create's first batch analysed dag_run, then rolled back.
    # pg_class.reltuples (written in place) outlived the rollback, the column statistics did
    # not: deciding on reltuples, the next create (1,500 runs <= 4 x 1,000, and < the 2,000
    # of the scheduler's analysis) never analysed anything.
    db, sql = never_analysed
    await _a_failed_create_of_1000_runs(db, sql)
    sql.execute("SELECT count(*) FROM dag_run")
    assert sql.fetchone() == (0,)
    assert _statistics(sql, "dag_run")[:2] == (1000, 0)  # the state: rows counted, no statistics
    async with db.engine.connect() as conn:
        assert await counted_runs(conn) == 0

    view = await BackfillEngine(db, EngineConfig()).create(_spec(ONE_TASK, 1500, mode=Mode.EAGER))
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 1500, 1)
    sql.execute(
        "SELECT attname FROM pg_stats WHERE tablename = 'dag_run' AND attname IN ('dag_id', 'run_id')"
    )
    assert sorted(row[0] for row in sql.fetchall()) == ["dag_id", "run_id"]


async def test_a_table_held_during_the_analysis_is_analysed_once_more_at_the_end(
    never_analysed: tuple[Database, psycopg2.extensions.cursor],
) -> None:
    # A table another session holds (autovacuum, a manual VACUUM) is skipped, never waited
    # for (its LOCK ... NOWAIT fails): the create tries it once more at its end.
    db, sql = never_analysed
    holder = psycopg2.connect(sql.connection.dsn)
    try:
        with holder.cursor() as held:
            held.execute("LOCK TABLE task_instance IN SHARE UPDATE EXCLUSIVE MODE")  # what ANALYZE takes
            start = dt.datetime(2024, 1, 1, tzinfo=UTC)
            hourly = BackfillSpec(  # 6,000 runs: the analysis at 2,000 leaves the lanes writing
                dag_id=HOURLY,
                from_date=start,
                to_date=start + dt.timedelta(hours=5999),
                mode=Mode.EAGER,
            )
            create = asyncio.create_task(BackfillEngine(db, EngineConfig(batch_size=500)).create(hourly))
            # The analysis at 2,000 runs, while the lanes write: backfill_dag_run analysed,
            # task_instance skipped.
            while _statistics(sql, "backfill_dag_run")[2] == 0:
                assert not create.done()
                await asyncio.sleep(0.01)
            assert _statistics(sql, "task_instance")[1:] == (0, 0)
        holder.rollback()
    finally:
        holder.close()
    view = await create
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 6000, 1)
    _, stats, analyses = _statistics(sql, "task_instance")
    assert stats > 0 and analyses == 1
    assert _statistics(sql, "backfill_dag_run")[2] == 1  # the retry was only of the table skipped


async def _ten_runs(db: Database) -> None:
    """A backfill of 10 runs (of another DAG than :data:`ONE_TASK`)."""
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    hours = BackfillSpec(
        dag_id=HOURLY, from_date=start, to_date=start + dt.timedelta(hours=9), mode=Mode.EAGER
    )
    await BackfillEngine(db, EngineConfig()).create(hours)


async def test_a_database_with_history_is_not_analysed_again_after_a_statistics_reset(
    never_analysed: tuple[Database, psycopg2.extensions.cursor],
) -> None:
    # Found measuring (bench B, 1,000 x 10 over 20,000 runs of history: 1.5x the ceiling, not
    # 1.1x): counting rows as least(reltuples, n_live_tup) saw a database whose cumulative
    # statistics are empty (pg_stat_reset, a crash, a database made from a template) as
    # outgrown by every large create, and analysed task_instance each time.
    db, sql = never_analysed
    history = await BackfillEngine(db, EngineConfig()).create(_spec(THREE, 3000, mode=Mode.EAGER))
    assert not isinstance(history, DryRun)
    sql.execute("ANALYZE dag_run, task_instance, backfill_dag_run")
    sql.execute("SELECT pg_stat_reset()")
    assert [_statistics(sql, t)[2] for t in ("dag_run", "task_instance", "backfill_dag_run")] == [0, 0, 0]

    view = await BackfillEngine(db, EngineConfig()).create(_spec(ONE_TASK, 2100, mode=Mode.EAGER))
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 2100, 1)
    # 2,100 runs over statistics counting 3,000 runs (9,000 task instances): nothing outgrown.
    assert [_statistics(sql, t)[2] for t in ("dag_run", "task_instance", "backfill_dag_run")] == [0, 0, 0]


async def test_a_column_without_statistics_does_not_make_a_table_unanalysed(
    never_analysed: tuple[Database, psycopg2.extensions.cursor],
) -> None:
    # Review finding: a column with SET STATISTICS 0 (or hidden by column grants) has no
    # pg_stats row; asking for the planned columns' made every batch ANALYZE dag_run.
    db, sql = never_analysed
    sql.execute("ALTER TABLE dag_run ALTER COLUMN dag_id SET STATISTICS 0")
    await _ten_runs(db)
    sql.execute("ANALYZE dag_run")
    sql.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'dag_run' AND attname = 'dag_id'")
    assert sql.fetchone() == (0,)
    async with db.engine.begin() as conn:
        assert await counted_runs(conn) == 10
        assert await analyze_written_tables(conn, everything=False, runs_written=10) == TableAnalysis()


async def test_tables_of_another_role_are_neither_analysed_nor_skipped(
    never_analysed: tuple[Database, psycopg2.extensions.cursor],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Review finding: ANALYZE by a role that does not own the table only warns, and its
    # last_analyze unchanged made it "skipped" (and retried). Now: not analysable, said once.
    db, sql = never_analysed
    monkeypatch.setattr(_runs, "_NOT_OWNED_TOLD", set())
    await _ten_runs(db)
    name = sql.connection.info.dbname
    role = f"{name}_writer"
    sql.execute(f'CREATE ROLE "{role}" LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
    other = connect(asyncpg_url(name).replace(f"{PG_USER}@", f"{role}@"))
    try:
        caplog.set_level(logging.INFO, logger="sidecar.store._runs")
        for _ in range(2):
            async with other.engine.begin() as conn:
                assert await counted_runs(conn) is None
                analysis = await analyze_written_tables(conn, everything=True, runs_written=1000)
                assert analysis == TableAnalysis()
        told = [r.args[0] for r in caplog.records if "belong to another role" in r.msg and r.args]
        assert sorted(", ".join(told).split(", ")) == ["backfill_dag_run", "dag_run", "task_instance"]
    finally:
        await other.dispose()
        sql.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
    assert _statistics(sql, "task_instance")[1:] == (0, 0)


async def test_a_failed_analysis_fails_no_create(
    never_analysed: tuple[Database, psycopg2.extensions.cursor], caplog: pytest.LogCaptureFixture
) -> None:
    # Review finding: the analysis (or its retry at the end) failing failed a create whose
    # runs were committed. An expression index whose function refuses to run under ANALYZE.
    db, sql = never_analysed
    sql.execute(
        "CREATE FUNCTION refuse_analyze(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN"
        " IF current_query() ILIKE 'ANALYZE%%' THEN RAISE EXCEPTION 'injected' USING ERRCODE = 'XX000';"
        " END IF; RETURN $1; END $$; CREATE INDEX refuse_analyze ON task_instance (refuse_analyze(task_id))"
    )
    view = await BackfillEngine(db, EngineConfig(lane_creates=0)).create(
        _spec(ONE_TASK, 2100, mode=Mode.EAGER)
    )
    assert not isinstance(view, DryRun)
    _check_intact(sql, view.id, 2100, 1)
    # The one table's analysis failed (its savepoint rolled back), the others' went on.
    assert [
        r
        for r in caplog.records
        if r.getMessage() == "analysing task_instance failed (other): left to autovacuum"
    ]
    assert "injected" not in caplog.text  # its class, not the server's text
    sql.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'backfill_dag_run'")
    assert sql.fetchone()[0] > 0  # analysed after the table that failed


@contextlib.asynccontextmanager
async def _lanes_held_at_their_claim(
    database: Database, sql: psycopg2.extensions.cursor
) -> AsyncIterator[tuple[BackfillEngine, asyncio.Task[object], list[asyncio.Task[object]], int]]:
    """A create writing in lanes whose batches in flight all wait at their claim (another
    session holds the backfill's claim row) until the block ends: the engine, the create,
    those batches and the backfill."""
    engine = BackfillEngine(database, EngineConfig(batch_size=50))
    create: asyncio.Task[object] = asyncio.create_task(engine.create(_spec(ONE_TASK, 5000, mode=Mode.EAGER)))

    def lane_batches() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "_write_batch"]

    while not lane_batches():
        assert not create.done()
        await asyncio.sleep(0.01)
    sql.execute("SELECT max(id) FROM backfill")  # this create's (the tests before left theirs)
    (backfill_id,) = sql.fetchone()
    async with database.engine.begin() as holder:
        await holder.execute(
            sa.text("SELECT 1 FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = :id FOR UPDATE"),
            {"id": backfill_id},
        )
        # Once a batch waits at its claim, the one in front of it (which may have claimed
        # before this lock: it waited for its commit) has ended: what is left is held.
        while not await holder.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        ):
            assert not create.done()
            await asyncio.sleep(0.01)
        in_flight = [t for t in lane_batches() if not t.done()]
        assert in_flight
        yield engine, create, in_flight, backfill_id


def _check_written(sql: psycopg2.extensions.cursor, backfill_id: int) -> None:
    """The backfill's cursor counts exactly the runs committed (no batch was cut half-way)."""
    sql.execute(
        "SELECT written_count, (SELECT count(*) FROM dag_run WHERE backfill_id = %s)"
        " FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s",
        (backfill_id, backfill_id),
    )
    written, runs = sql.fetchone()
    assert written == runs and runs < 1000


async def _cancel_twice(create: asyncio.Task[object]) -> None:
    for _ in range(2):
        create.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not create.done()  # draining


async def test_a_second_cancel_lets_the_lane_batches_in_flight_end(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    # A client gone (the first cancel), then a shutdown (the second) while the lanes drain:
    # each batch in flight must still end at its commit or rollback, not mid-statement.
    async with _lanes_held_at_their_claim(database, sql) as (_, create, in_flight, backfill_id):
        await _cancel_twice(create)
    with pytest.raises(asyncio.CancelledError):
        await create
    assert all(t.done() and not t.cancelled() for t in in_flight)
    _check_written(sql, backfill_id)


async def test_after_a_second_cancel_the_drain_is_bounded(
    database: Database, sql: psycopg2.extensions.cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review finding: a batch that cannot end (a lock held, the database gone) held the
    # second cancel (a shutdown) for ever; now for DRAIN_BOUND (20 s), then it is cancelled.
    monkeypatch.setattr(_lanes, "DRAIN_BOUND", 0.2)
    async with _lanes_held_at_their_claim(database, sql) as (_, create, in_flight, backfill_id):
        await _cancel_twice(create)
        with pytest.raises(asyncio.CancelledError):
            await create  # while the claim row is still held: the batches cannot have ended
        assert all(t.cancelled() for t in in_flight)
    _check_written(sql, backfill_id)


async def test_closing_the_engine_lets_the_lane_batches_in_flight_end(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    # Review finding: a shutdown (SidecarServer.stop: the handlers cancelled, engine.close,
    # then the pool disposed and asyncio.run cancelling what is left) cut the lanes'
    # batches in flight: engine.close now waits for them (at most DRAIN_BOUND).
    async with _lanes_held_at_their_claim(database, sql) as (engine, create, in_flight, backfill_id):
        create.cancel()
        closing = asyncio.create_task(engine.close())
        await asyncio.sleep(0.2)
        assert not closing.done()  # waiting for the batches, held at their claim
    await closing
    assert all(t.done() and not t.cancelled() for t in in_flight)
    with pytest.raises(asyncio.CancelledError):
        await create
    _check_written(sql, backfill_id)
