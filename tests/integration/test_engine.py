"""The engine against a real Airflow 3.3.2 schema on PostgreSQL: validations, rows, windows, lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import pickle

import psycopg2.extensions
import pytest

from sidecar import errors
from sidecar.engine import (
    BackfillEngine,
    BackfillSpec,
    Disposition,
    DryRun,
    EngineConfig,
    Mode,
    ReprocessBehavior,
    State,
)
from sidecar.store import Database

UTC = dt.UTC
THREE = "sidecar_e2e_three"


def day(d: int, month: int = 1, year: int = 2025) -> dt.datetime:
    return dt.datetime(year, month, d, tzinfo=UTC)


def spec(**kw: object) -> BackfillSpec:
    values: dict[str, object] = {
        "dag_id": THREE,
        "from_date": day(1),
        "to_date": day(10),
        "max_active_runs": 2,
    }
    values.update(kw)
    return BackfillSpec(**values)  # type: ignore[arg-type]


async def test_windowed_create_writes_first_window_with_airflow_row_contract(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(spec())
    assert not isinstance(view, DryRun)
    # max_active_runs 2 + lookahead 1: three runs now, the rest on later ticks.
    assert view.progress.planned == 10
    assert view.progress.written == 3
    assert view.progress.queued == 3
    assert view.state is State.ACTIVE

    sql.execute(
        "SELECT run_id, state, run_type, triggered_by, logical_date, data_interval_start, data_interval_end,"
        " run_after, start_date, end_date, clear_number, span_status, conf, backfill_id,"
        " created_dag_version_id = (SELECT id FROM dag_version WHERE dag_id = %s ORDER BY version_number DESC"
        " LIMIT 1), log_template_id = (SELECT max(id) FROM log_template), context_carrier, queued_at IS NOT NULL"
        " FROM dag_run ORDER BY logical_date",
        (THREE,),
    )
    runs = sql.fetchall()
    assert [r[0] for r in runs] == [f"backfill__2025-01-0{d}T00:00:00+00:00" for d in (1, 2, 3)]
    for r in runs:
        assert r[1:4] == ("queued", "backfill", "BACKFILL")
        assert r[4] == r[5] == r[6] == r[7]  # trigger timetable: interval collapses to the tick
        assert r[8] is None and r[9] is None
        assert r[10:14] == (0, "not_started", {}, view.id)
        assert r[14] is True and r[15] is True and r[17] is True
        carrier = r[16]
        assert carrier["__type"] == "dict"
        assert carrier["__var"]["traceparent"].startswith("00-")

    sql.execute(
        "SELECT task_id, map_index, state, try_number, max_tries, hostname, pool, pool_slots, queue,"
        " priority_weight, operator, custom_operator_name, executor_config, task_display_name, span_status"
        " FROM task_instance WHERE run_id = %s ORDER BY task_id",
        (runs[0][0],),
    )
    tis = sql.fetchall()
    assert [t[0] for t in tis] == ["first", "second", "third"]
    weights = {t[0]: t[9] for t in tis}
    assert weights == {"first": 3, "second": 2, "third": 1}  # downstream weight rule
    for t in tis:
        assert t[1:6] == (-1, None, 0, 0, "")
        assert t[6:9] == ("default_pool", 1, "default")
        assert t[10] == t[11] == "BashOperator"
        assert pickle.loads(bytes(t[12])) == {}
        assert t[13] == t[0]
        assert t[14] == "not_started"

    sql.execute(
        "SELECT sort_ordinal, dag_run_id IS NOT NULL, exception_reason FROM backfill_dag_run ORDER BY 1"
    )
    assert sql.fetchall() == [(1, True, None), (2, True, None), (3, True, None)]


async def test_tick_tops_up_as_runs_finish_and_completes(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(spec(from_date=day(1), to_date=day(5)))
    assert not isinstance(view, DryRun)
    assert (await engine.tick()).runs_written == 0  # window already full

    sql.execute("UPDATE dag_run SET state = 'success' WHERE logical_date <= %s", (day(2),))
    result = await engine.tick()
    assert result.runs_written == 2
    assert result.materializing == [view.id]

    sql.execute("UPDATE dag_run SET state = 'success'")
    await engine.tick()  # writes the last slot; the plan is exhausted
    sql.execute("SELECT count(*) FROM dag_run")
    assert sql.fetchone() == (5,)
    sql.execute("UPDATE dag_run SET state = 'success'")
    result = await engine.tick()
    assert result.backfills_completed == 1
    final = await engine.get(view.id)
    assert final.state is State.COMPLETED
    assert final.progress.succeeded == 5
    assert final.completed_at is not None


async def test_never_completed_while_slots_remain(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(spec())
    assert not isinstance(view, DryRun)
    # Airflow's 30 s timer would close it once its written runs finish; the sidecar reopens it.
    sql.execute("UPDATE dag_run SET state = 'success'")
    sql.execute("UPDATE backfill SET completed_at = now()")
    await engine.tick()
    sql.execute("SELECT completed_at FROM backfill WHERE id = %s", (view.id,))
    assert sql.fetchone() == (None,)
    assert (await engine.get(view.id)).state is State.ACTIVE


async def test_eager_writes_every_run_before_returning(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(spec(mode=Mode.EAGER, run_backwards=True))
    assert not isinstance(view, DryRun)
    assert view.progress.written == view.progress.planned == 10
    sql.execute(
        "SELECT b.sort_ordinal, r.logical_date FROM backfill_dag_run b JOIN dag_run r ON r.id = b.dag_run_id"
        " ORDER BY b.sort_ordinal"
    )
    rows = sql.fetchall()
    assert [r[0] for r in rows] == list(range(1, 11))
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)  # backwards: latest first
    sql.execute("SELECT count(*) FROM task_instance")
    assert sql.fetchone() == (30,)


async def test_reprocess_matrix_matches_airflow(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    # Existing scheduled runs on 01-02 (success), 01-03 (failed), 01-04 (running): the cases of Airflow's
    # reprocess matrix (``_get_dag_run_no_create_reason`` in airflow/models/backfill.py).
    for d, state in ((2, "success"), (3, "failed"), (4, "running")):
        sql.execute(
            "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, data_interval_start, data_interval_end,"
            " state, run_type, triggered_by, clear_number, span_status, conf)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'scheduled', 'TIMETABLE', 0, 'not_started', '{}')",
            (THREE, f"scheduled__{day(d).isoformat()}", day(d), day(d), day(d), day(d), state),
        )
        sql.execute(
            "INSERT INTO task_instance (id, dag_id, task_id, run_id, map_index, try_number, max_tries, pool,"
            " pool_slots, state, span_status) VALUES (gen_random_uuid(), %s, 'first', %s, -1, 1, 0,"
            " 'default_pool', 1, %s, 'not_started')",
            (THREE, f"scheduled__{day(d).isoformat()}", "success" if state == "success" else "failed"),
        )
    view = await engine.create(
        spec(
            from_date=day(1),
            to_date=day(6),
            run_backwards=True,
            reprocess_behavior=ReprocessBehavior.FAILED,
            mode=Mode.EAGER,
            dag_run_conf={"k": 1},
        )
    )
    assert not isinstance(view, DryRun)
    sql.execute(
        "SELECT b.sort_ordinal, b.logical_date, r.run_id, b.exception_reason FROM backfill_dag_run b"
        " LEFT JOIN dag_run r ON r.id = b.dag_run_id ORDER BY b.sort_ordinal"
    )
    rows = [(o, ld.day, run_id, reason) for o, ld, run_id, reason in sql.fetchall()]
    assert rows == [
        (1, 6, "backfill__2025-01-06T00:00:00+00:00", None),
        (2, 5, "backfill__2025-01-05T00:00:00+00:00", None),
        (3, 4, None, "in flight"),
        (4, 3, "scheduled__2025-01-03T00:00:00+00:00", None),
        (5, 2, None, "already exists"),
        (6, 1, "backfill__2025-01-01T00:00:00+00:00", None),
    ]
    # The failed run was cleared into the backfill, keeping its run id.
    sql.execute(
        "SELECT state, run_type, triggered_by, backfill_id, clear_number, conf, start_date FROM dag_run"
        " WHERE run_id = 'scheduled__2025-01-03T00:00:00+00:00'"
    )
    assert sql.fetchone() == ("queued", "backfill", "BACKFILL", view.id, 1, {"k": 1}, None)
    sql.execute(
        "SELECT task_id, state, max_tries FROM task_instance WHERE run_id = 'scheduled__2025-01-03T00:00:00+00:00'"
        " ORDER BY task_id"
    )
    assert sql.fetchall() == [("first", None, 1), ("second", None, 0), ("third", None, 0)]
    sql.execute("SELECT task_id, state, try_number FROM task_instance_history")
    assert sql.fetchall() == [("first", "failed", 1)]
    # The running and the successful runs are untouched.
    sql.execute(
        "SELECT state, backfill_id FROM dag_run WHERE run_id LIKE 'scheduled__%%' ORDER BY logical_date"
    )
    assert sql.fetchall() == [("success", None), ("queued", view.id), ("running", None)]


async def test_validations_in_airflow_order(engine: BackfillEngine) -> None:
    with pytest.raises(errors.DagNotFound, match="Could not find dag nope"):
        await engine.create(spec(dag_id="nope"))
    with pytest.raises(errors.BackfillNotAllowed, match="does not allow backfill runs"):
        await engine.create(spec(dag_id="sidecar_it_no_backfill"))
    with pytest.raises(errors.NonPeriodicSchedule, match="non-periodic schedule"):
        await engine.create(spec(dag_id="sidecar_it_manual"))
    with pytest.raises(errors.InvalidDateRange):
        await engine.create(spec(from_date=day(5), to_date=day(1)))
    future = dt.datetime.now(UTC) + dt.timedelta(days=3)
    with pytest.raises(errors.FutureDateRange):
        await engine.create(spec(from_date=future, to_date=future + dt.timedelta(days=1)))
    with pytest.raises(errors.InvalidDirection):
        await engine.create(
            spec(
                dag_id="sidecar_it_depends_on_past",
                run_backwards=True,
                reprocess_behavior=ReprocessBehavior.FAILED,
            )
        )
    with pytest.raises(errors.InvalidReprocess):
        await engine.create(spec(dag_id="sidecar_it_depends_on_past"))
    with pytest.raises(errors.InvalidConf, match="batch"):
        await engine.create(spec(dag_id="sidecar_it_params", dag_run_conf={"batch": 0}))
    with pytest.raises(errors.InvalidArgument, match="max_active_runs"):
        await engine.create(spec(max_active_runs=0))
    with pytest.raises(errors.NoRunsToCreate):
        await engine.create(
            spec(from_date=day(1) + dt.timedelta(hours=1), to_date=day(1) + dt.timedelta(hours=5))
        )
    # Nothing was written by any of them.
    assert (await engine.list_backfills(dag_id=None, state=None, page_size=10, before_id=None))[0] == []


async def test_one_active_backfill_per_dag_and_idempotent_request_id(engine: BackfillEngine) -> None:
    first = await engine.create(spec(), request_id="req-1")
    again = await engine.create(spec(), request_id="req-1")
    assert not isinstance(first, DryRun) and not isinstance(again, DryRun)
    assert again.id == first.id
    with pytest.raises(errors.InvalidArgument, match="different request"):
        await engine.create(spec(max_active_runs=3), request_id="req-1")
    with pytest.raises(errors.BackfillAlreadyRunning):
        await engine.create(spec())


async def test_dry_run_writes_nothing_and_shows_decisions(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    sql.execute(
        "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status)"
        " VALUES (%s, 'manual__x', %s, %s, 'failed', 'manual', 0, 'not_started')",
        (THREE, day(2), day(2)),
    )
    result = await engine.create(
        spec(from_date=day(1), to_date=day(3), reprocess_behavior=ReprocessBehavior.FAILED),
        validate_only=True,
    )
    assert isinstance(result, DryRun)
    assert [(s.sort_ordinal, s.run_id, s.disposition) for s in result.runs] == [
        (1, "backfill__2025-01-01T00:00:00+00:00", Disposition.CREATE),
        (2, "manual__x", Disposition.REPROCESS),
        (3, "backfill__2025-01-03T00:00:00+00:00", Disposition.CREATE),
    ]
    sql.execute("SELECT (SELECT count(*) FROM backfill), (SELECT count(*) FROM dag_run)")
    assert sql.fetchone() == (0, 1)


async def test_pause_unpause_cancel(engine: BackfillEngine, sql: psycopg2.extensions.cursor) -> None:
    view = await engine.create(spec())
    assert not isinstance(view, DryRun)
    assert (await engine.set_paused(view.id, True)).state is State.PAUSED
    assert (await engine.set_paused(view.id, True)).is_paused  # idempotent
    assert (await engine.set_paused(view.id, False)).state is State.ACTIVE
    sql.execute("UPDATE dag_run SET state = 'running' WHERE logical_date = %s", (day(1),))
    cancelled = await engine.cancel(view.id)
    assert cancelled.state is State.CANCELLED
    assert not cancelled.is_paused
    sql.execute("SELECT logical_date, state, end_date IS NOT NULL FROM dag_run ORDER BY logical_date")
    assert [(r[0].day, r[1], r[2]) for r in sql.fetchall()] == [
        (1, "running", False),
        (2, "failed", True),
        (3, "failed", True),
    ]
    sql.execute(
        "SELECT DISTINCT state FROM task_instance WHERE run_id <> %s",
        ("backfill__2025-01-01T00:00:00+00:00",),
    )
    assert sql.fetchall() == [("skipped",)]
    # Creation stopped: a tick writes nothing more.
    assert (await engine.tick()).runs_written == 0
    with pytest.raises(errors.InvalidTransition, match="is cancelled"):
        await engine.set_paused(view.id, True)
    # A new backfill of the DAG may start.
    assert not isinstance(await engine.create(spec(from_date=day(11), to_date=day(12))), DryRun)


async def test_interval_timetable_mapped_tasks_and_time_zone(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    view = await engine.create(
        spec(dag_id="sidecar_it_interval", from_date=day(29, 3), to_date=day(31, 3), mode=Mode.EAGER)
    )
    assert not isinstance(view, DryRun)
    sql.execute(
        "SELECT run_id, logical_date, data_interval_end, run_after FROM dag_run ORDER BY logical_date"
    )
    rows = sql.fetchall()
    # 03:00 Amsterdam: UTC+1 before the 2025-03-30 DST change, UTC+2 after; run ids use run_after (UTC).
    assert [(r[1].isoformat(), r[2].isoformat()) for r in rows] == [
        ("2025-03-29T02:00:00+00:00", "2025-03-30T01:00:00+00:00"),
        ("2025-03-30T01:00:00+00:00", "2025-03-31T01:00:00+00:00"),
    ]
    assert [r[0] for r in rows] == [f"backfill__{r[3].isoformat()}" for r in rows]
    sql.execute(
        "SELECT task_id, map_index, max_tries, queue, priority_weight FROM task_instance WHERE run_id = %s"
        " ORDER BY task_id, map_index",
        (rows[0][0],),
    )
    assert sql.fetchall() == [
        ("begin", -1, 2, "default", 3 + 1 + 7),
        ("end", -1, 2, "q2", 7),
        ("fan", 0, 2, "default", 1 + 7),
        ("fan", 1, 2, "default", 1 + 7),
        ("fan", 2, 2, "default", 1 + 7),
    ]


async def test_list_runs_shows_written_then_pending(engine: BackfillEngine) -> None:
    view = await engine.create(spec(from_date=day(1), to_date=day(6)))
    assert not isinstance(view, DryRun)
    page, after = await engine.list_runs(view.id, page_size=4, after_ordinal=0)
    assert [(s.sort_ordinal, s.disposition) for s in page] == [
        (1, Disposition.CREATE),
        (2, Disposition.CREATE),
        (3, Disposition.CREATE),
        (4, Disposition.PENDING),
    ]
    assert after == 4
    rest, after = await engine.list_runs(view.id, page_size=4, after_ordinal=4)
    assert [(s.sort_ordinal, s.disposition) for s in rest] == [
        (5, Disposition.PENDING),
        (6, Disposition.PENDING),
    ]
    assert after is None


async def test_slow_to_count_plans_are_counted_after_the_first_runs(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor
) -> None:
    # 03:00 Amsterdam is not evenly spaced in UTC: the plan is stepped, so it is counted later.
    view = await engine.create(
        spec(
            dag_id="sidecar_it_interval",
            from_date=day(1, 1, 2023),
            to_date=day(1, 1, 2025),
            max_active_runs=1,
        )
    )
    assert not isinstance(view, DryRun)
    assert view.progress.written == 2

    async def counted() -> int:
        while True:
            sql.execute(
                "SELECT planned_count FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s",
                (view.id,),
            )
            (planned,) = sql.fetchone()
            if planned is not None:
                return int(planned)
            await asyncio.sleep(0.05)

    assert await asyncio.wait_for(counted(), 60) == 731  # 2023-01-01 .. 2024-12-31, one a day
    assert (await engine.get(view.id)).progress.planned == 731


@pytest.mark.parametrize("dag_id", [THREE, "sidecar_it_interval"])  # counted arithmetically / by stepping
async def test_too_many_runs_are_refused_before_anything_is_written(
    database: Database, sql: psycopg2.extensions.cursor, dag_id: str
) -> None:
    small = BackfillEngine(database, EngineConfig(max_runs_per_backfill=100))
    with pytest.raises(errors.InvalidArgument, match="more than 100 runs") as excinfo:
        await small.create(spec(dag_id=dag_id, from_date=day(1, 1, 2024), to_date=day(1, 1, 2025)))
    assert excinfo.value.field == "backfill.to_date"
    assert not isinstance(await small.create(spec(dag_id=dag_id, from_date=day(1), to_date=day(20))), DryRun)
    sql.execute("SELECT count(*) FROM backfill")
    assert sql.fetchone() == (1,)
