"""PostgreSQL's bulk write path against the real Airflow 3.3.2 schema: same rows, same conflicts, all or nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, Mode, ReprocessBehavior
from sidecar.engine._plans import build_plan
from sidecar.store import (
    Database,
    RunContext,
    TableAnalysis,
    analyze_written_tables,
    latest_log_template_id,
    write_batch,
)
from sidecar.store._bulk import TaskInstanceMethod
from sidecar.store._tables import backfill

UTC = dt.UTC
MAPPED = "sidecar_it_interval"  # a mapped task (fan.expand over three values) among plain ones
THREE = "sidecar_e2e_three"
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)

#: Columns that legitimately differ between two writes of the same plan.
_VOLATILE = {"id", "queued_at", "created_at", "updated_at", "context_carrier", "backfill_id", "dag_run_id"}


async def _write_plan(
    database: Database,
    dag_id: str,
    method: TaskInstanceMethod | None,
    *,
    batch: int = 4,
    statistics_growth: int | None = None,
) -> int:
    """Write a whole four-run plan of ``dag_id`` through ``write_batch`` with one method."""
    engine = BackfillEngine(database)
    async with database.engine.begin() as conn:
        loaded = await engine.catalog.load(conn, dag_id)
        assert loaded is not None
        backfill_id = (
            await conn.execute(
                backfill.insert().returning(backfill.c.id),
                {
                    "dag_id": dag_id,
                    "from_date": dt.datetime(2025, 3, 1, tzinfo=UTC),
                    "to_date": dt.datetime(2025, 3, 5, tzinfo=UTC),
                    "dag_run_conf": {"k": [1, "v"]},
                    "is_paused": False,
                    "reprocess_behavior": "none",
                    "max_active_runs": 3,
                    "created_at": NOW,
                    "updated_at": NOW,
                    "triggering_user_name": "tester",
                },
            )
        ).scalar_one()
        ctx = RunContext(
            backfill_id=backfill_id,
            dag=loaded.template,
            dag_version_id=loaded.dag_version_id,
            bundle_version=loaded.bundle_version,
            log_template_id=await latest_log_template_id(conn),
            conf={"k": [1, "v"]},
            triggering_user_name="tester",
        )
    plan = build_plan(
        loaded.template.timetable,
        dag_id,
        dt.datetime(2025, 3, 1, tzinfo=UTC),
        dt.datetime(2025, 3, 5, tzinfo=UTC),
        False,
        NOW,
    )
    runs = list(plan.runs())
    for start in range(0, len(runs), batch):
        async with database.engine.begin() as conn:
            await write_batch(
                conn,
                ctx,
                runs[start : start + batch],
                reprocess_behavior=ReprocessBehavior.NONE,
                conf_given=True,
                now=NOW,
                bulk_method=method,
                statistics_growth=statistics_growth,
            )
    return int(backfill_id)


def _snapshot(sql: psycopg2.extensions.cursor) -> dict[str, list[tuple[Any, ...]]]:
    """Every written row of the three tables, volatile columns dropped, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    orders = {
        "dag_run": "logical_date",
        "task_instance": "run_id, task_id, map_index",
        "backfill_dag_run": "sort_ordinal",
    }
    for table, order in orders.items():
        sql.execute(f"SELECT * FROM {table} ORDER BY {order}")
        names = [d.name for d in sql.description]
        keep = [i for i, n in enumerate(names) if n not in _VOLATILE]
        out[table] = [tuple((names[i], row[i]) for i in keep) for row in sql.fetchall()]
    return out


def _clear(sql: psycopg2.extensions.cursor) -> None:
    for table in ("task_instance", "backfill_dag_run", "dag_run", "backfill"):
        sql.execute(f"DELETE FROM {table}")


@pytest.mark.parametrize("method", ["copy", "unnest"])
async def test_bulk_path_writes_the_same_rows_as_the_simple_path(
    database: Database, sql: psycopg2.extensions.cursor, method: TaskInstanceMethod
) -> None:
    await _write_plan(database, MAPPED, None)
    simple = _snapshot(sql)
    _clear(sql)
    await _write_plan(database, MAPPED, method)
    bulk = _snapshot(sql)

    assert len(simple["dag_run"]) == 4
    # Three plain tasks would give 4 x 3 rows; the mapped one adds two more per run.
    assert len(simple["task_instance"]) > 4 * 3
    assert any(dict(row)["map_index"] == 2 for row in simple["task_instance"])
    for table in simple:
        assert bulk[table] == simple[table], table

    # Carriers: each run has its own, shared by its task instances, in Airflow's shape.
    sql.execute(
        "SELECT count(DISTINCT r.context_carrier), bool_and(r.context_carrier = t.context_carrier)"
        " FROM dag_run r JOIN task_instance t USING (dag_id, run_id)"
    )
    assert sql.fetchone() == (4, True)

    # Ids: UUIDv7, strictly increasing in the order each batch (transaction) wrote them.
    sql.execute("SELECT xmin::text, array_agg(id::text ORDER BY ctid) FROM task_instance GROUP BY 1")
    for _, ids in sql.fetchall():
        parsed = [uuid.UUID(i) for i in ids]
        assert all(i.version == 7 for i in parsed)
        if method == "copy":
            assert parsed == sorted(parsed) and len(set(parsed)) == len(parsed)


async def test_statistics_are_refreshed_only_for_tables_the_backfill_outgrew(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    await _write_plan(database, MAPPED, "copy")
    sql.execute("ANALYZE dag_run, task_instance, backfill_dag_run")
    sql.execute("SELECT relname, reltuples FROM pg_class WHERE relname IN ('dag_run', 'backfill_dag_run')")
    counted = dict(sql.fetchall())
    assert counted == {"dag_run": 4, "backfill_dag_run": 4}
    async with database.engine.begin() as conn:
        # As many runs as the statistics count: the table at most doubled, no plan changes.
        assert await analyze_written_tables(conn, everything=True, runs_written=4) == TableAnalysis()
    async with database.engine.begin() as conn:  # a transaction each, as the engine calls it
        assert await analyze_written_tables(conn, everything=False, runs_written=4) == TableAnalysis()
    async with database.engine.begin() as conn:
        # More runs than the statistics count (the first ANALYZE point of an empty database).
        assert await analyze_written_tables(conn, everything=True, runs_written=5) == TableAnalysis(
            ("dag_run", "backfill_dag_run")
        )
    async with database.engine.begin() as conn:
        assert await analyze_written_tables(conn, everything=True, runs_written=1_000) == TableAnalysis(
            ("dag_run", "task_instance", "backfill_dag_run")
        )
    async with database.engine.begin() as conn:
        assert await analyze_written_tables(conn, everything=False, runs_written=1_000) == TableAnalysis(
            ("dag_run",)
        )


#: The foreign-key check of ``task_instance -> dag_run`` (PostgreSQL's ``ri_triggers.c`` text).
_RUN_FK_CHECK = "SELECT 1 FROM ONLY dag_run x WHERE dag_id = %s AND run_id = %s FOR KEY SHARE OF x"


def _fk_check_index(sql: psycopg2.extensions.cursor) -> str:
    """The index the planner takes for the foreign-key check of one written run (index scans only)."""
    sql.execute("SELECT dag_id, run_id FROM dag_run LIMIT 1")
    dag_id, run_id = sql.fetchone() or ("", "")
    sql.execute("SET enable_seqscan = off")  # a handful of rows: compare the indexes, not a seq scan
    sql.execute(f"EXPLAIN (FORMAT JSON) {_RUN_FK_CHECK}", (dag_id, run_id))
    plan = sql.fetchone()[0][0]["Plan"]  # type: ignore[index]
    sql.execute("RESET enable_seqscan")
    while "Index Name" not in plan:
        plan = plan["Plans"][0]
    return str(plan["Index Name"])


async def test_a_batch_analyses_its_runs_before_the_foreign_key_checks_of_their_task_instances(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    sql.execute("TRUNCATE dag_run CASCADE")  # statistics reset, as in a fresh Airflow database
    analyses = (
        "SELECT c.reltuples, t.analyze_count FROM pg_class c JOIN pg_stat_user_tables t ON t.relid = c.oid"
    )
    sql.execute(f"{analyses} WHERE c.relname = 'dag_run'")
    reltuples, before = sql.fetchone()
    assert reltuples == -1
    # Two batches of two runs: the first outgrows the (absent) statistics, the second does not.
    await _write_plan(database, MAPPED, "copy", batch=2, statistics_growth=4)
    sql.execute(f"{analyses} WHERE c.relname = 'dag_run'")
    reltuples, after = sql.fetchone()
    # Analysed inside the first batch's transaction, its own uncommitted runs counted.
    assert (reltuples, after - before) == (2, 1)
    # The statistics know the DAG's runs: the check takes the unique (dag_id, run_id) index,
    # not the (dag_id) one that walks every run of the DAG per task instance.
    assert _fk_check_index(sql) == "dag_run_dag_id_run_id_key"


async def test_conflicting_runs_are_recorded_as_before(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    # A run (still running) already holds one planned date and one finished run another.
    sql.execute(
        "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
        " span_status, data_interval_start, data_interval_end) VALUES"
        " (%(d)s, 'manual__a', '2025-03-02 03:00+01', '2025-03-02', 'running', 'manual', 0, 'not_started',"
        "  '2025-03-02 03:00+01', '2025-03-03 03:00+01'),"
        " (%(d)s, 'manual__b', '2025-03-04 03:00+01', '2025-03-04', 'success', 'manual', 0, 'not_started',"
        "  '2025-03-04 03:00+01', '2025-03-05 03:00+01')",
        {"d": MAPPED},
    )
    backfill_id = await _write_plan(database, MAPPED, "copy", batch=10)
    sql.execute(
        "SELECT sort_ordinal, exception_reason, dag_run_id IS NULL FROM backfill_dag_run"
        " WHERE backfill_id = %s ORDER BY sort_ordinal",
        (backfill_id,),
    )
    reasons = {ordinal: (reason, no_run) for ordinal, reason, no_run in sql.fetchall()}
    assert reasons[2] == ("in flight", True)
    assert reasons[4] == ("already exists", True)
    assert all(reasons[o] == (None, False) for o in (1, 3))
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (backfill_id,))
    assert sql.fetchone() == (2,)


async def test_a_batch_failing_after_the_run_insert_writes_nothing_and_keeps_the_cursor(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(
        BackfillSpec(
            dag_id=THREE,
            from_date=dt.datetime(2025, 1, 1, tzinfo=UTC),
            to_date=dt.datetime(2025, 1, 20, tzinfo=UTC),
            max_active_runs=2,
            mode=Mode.WINDOWED,
        )
    )
    assert not isinstance(view, DryRun)
    sql.execute("SELECT count(*) FROM dag_run")
    runs_before = sql.fetchone()
    sql.execute("SELECT cursor, written_count FROM airflow_sidecar.sidecar_backfill")
    cursor_before = sql.fetchone()
    # Make room in the window, then break the task-instance insert, which runs after the
    # dag_run insert in the same transaction (a real server-side error, no savepoint).
    sql.execute("UPDATE dag_run SET state = 'success'")
    sql.execute(
        "CREATE FUNCTION sidecar_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'injected failure'; END$$;"
        " CREATE TRIGGER sidecar_test_refuse BEFORE INSERT ON task_instance"
        " FOR EACH STATEMENT EXECUTE FUNCTION sidecar_test_refuse()"
    )
    try:
        # The failure is the backfill's own (issue 10): the tick answers, the backfill is set
        # aside with the failure's class, and the batch left nothing behind.
        await engine.tick()
        failed = await engine.get(view.id)
        assert failed.write_failure is not None and failed.write_failure.set_aside
        assert failed.write_failure.reason == "database_error"  # SQLSTATE P0001: not transient
        assert "injected failure" not in failed.write_failure.message  # no server text to callers
        sql.execute("SELECT count(*) FROM dag_run")
        assert sql.fetchone() == runs_before
        sql.execute("SELECT cursor, written_count FROM airflow_sidecar.sidecar_backfill")
        assert sql.fetchone() == cursor_before
    finally:
        sql.execute("DROP TRIGGER sidecar_test_refuse ON task_instance; DROP FUNCTION sidecar_test_refuse()")
    await engine.set_paused(view.id, False)  # resume a set-aside backfill
    result = await engine.tick()
    assert result.runs_written > 0
