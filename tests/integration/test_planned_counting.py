"""A windowed backfill whose plan is counted after creation says so until the count lands.

``sidecar_it_interval`` runs at 03:00 Amsterdam: not evenly spaced in UTC, so its plan is
stepped slot by slot, and two years of it (731 slots) are more than creation counts at once
(``EXACT_COUNT_BUDGET``): the create writes the first runs and the count follows in the
background. Until then ``progress.planned`` is the slots written so far; every surface must
say it is a lower bound (``planned_is_counting``) and no time left may be computed from it.

The create's own answer is read before its count starts, so it is always still counting. To
read a backfill *while* it is counted, the test holds a real PostgreSQL row lock on its
``sidecar_backfill`` row: the count's UPDATE waits for it, reads do not. Released, the count
lands with the exact number.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg2
import psycopg2.extensions
import pytest

from sidecar.api._convert import backfill_message
from sidecar.engine import BackfillEngine, BackfillView, DryRun
from sidecar.engine._counting import RETRY_FIRST, BackgroundCounter
from sidecar.gateway._airflow import backfill_json
from sidecar.server import SidecarServer
from sidecar.store import Database, record_planned_count
from tests.integration.test_engine import day, spec
from tests.support.fixtures import AirflowDatabase
from tests.support.waiting import async_wait_until

DAG = "sidecar_it_interval"
#: 2023-01-01 .. 2024-12-31, one a day.
PLANNED = 731
LONG = {"dag_id": DAG, "from_date": day(1, 1, 2023), "to_date": day(1, 1, 2025), "max_active_runs": 1}
HOUR = dt.timedelta(hours=1)


def history(sql: psycopg2.extensions.cursor) -> None:
    """Three finished runs of an hour before the range: the estimate's durations."""
    for d in (1, 2, 3):
        when = day(d, 6, 2022)
        sql.execute(
            "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
            " span_status, start_date, end_date) VALUES (%s, %s, %s, %s, 'success', 'manual', 0,"
            " 'not_started', %s, %s)",
            (DAG, f"manual__{d}", when, when, when, when + HOUR),
        )


@contextlib.contextmanager
def count_held(db: AirflowDatabase, backfill_id: int) -> Iterator[None]:
    """Hold the backfill's row locked: its count cannot be recorded until the block ends."""
    conn = psycopg2.connect(db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT planned_count FROM airflow_sidecar.sidecar_backfill WHERE backfill_id = %s FOR UPDATE",
                (backfill_id,),
            )
            assert cur.fetchone() == (None,)  # not counted yet, and now not before the block ends
        yield
    finally:
        conn.rollback()
        conn.close()


async def count_stopped(database: Database, db: AirflowDatabase) -> BackfillView:
    """A backfill just created whose count stopped (shutdown) before it landed: still uncounted."""
    first = BackfillEngine(database)
    created = await first.create(spec(**LONG))
    assert not isinstance(created, DryRun)
    with count_held(db, created.id):
        await first.close()  # stops the count waiting on the lock: a restart would recount
    return created


async def counted(engine: BackfillEngine, backfill_id: int) -> BackfillView:
    """The backfill once its count landed (with its estimate)."""

    async def done() -> BackfillView | None:
        view = await engine.get(backfill_id, with_estimate=True)
        return None if view.progress.planned_is_counting else view

    return await async_wait_until(done, 120, 0.05, "the background count")


async def test_progress_and_estimate_say_the_plan_is_counted_until_the_exact_count_lands(
    database: Database, sql: psycopg2.extensions.cursor, clean_db: AirflowDatabase
) -> None:
    history(sql)
    engine = BackfillEngine(database)
    created = await engine.create(spec(**LONG))
    assert not isinstance(created, DryRun)
    p = created.progress
    assert p.planned_is_counting and p.planned == p.written and 1 <= p.written < PLANNED
    with count_held(clean_db, created.id):
        view = await engine.get(created.id, with_estimate=True)
        assert view.progress.planned_is_counting and view.progress.planned == view.progress.written
        e = view.estimate
        assert e is not None and e.run_p50 == HOUR  # one run's duration still holds ...
        assert (e.runs_remaining, e.remaining_p50, e.remaining_p90) == (None, None, None)  # ... no time left
        message = backfill_message(view)
        assert message.progress.planned_is_counting and message.progress.planned == p.written
        assert message.estimate.plan_is_counting and message.estimate.runs_remaining == 0  # not known
        assert not any(message.estimate.HasField(f) for f in ("remaining_p50", "remaining_p90"))
        v2 = backfill_json(message)["estimate"]  # Airflow's /api/v2 shape
        assert v2["plan_is_counting"] is True and v2["run_duration_p50_seconds"] == 3600
        assert (v2["runs_remaining"], v2["remaining_p50_seconds"], v2["remaining_p90_seconds"]) == (None,) * 3

    done = await counted(engine, created.id)
    assert (done.progress.planned, done.progress.planned_is_counting) == (PLANNED, False)
    e = done.estimate
    assert e is not None and e.runs_remaining == PLANNED  # none finished; one at a time
    assert e.remaining_p50 == PLANNED * HOUR
    message = backfill_message(done)
    assert not message.progress.planned_is_counting and not message.estimate.plan_is_counting
    v2 = backfill_json(message)["estimate"]
    assert (v2["plan_is_counting"], v2["runs_remaining"], v2["remaining_p50_seconds"]) == (
        False,
        PLANNED,
        PLANNED * 3600,
    )


async def test_a_backfill_ended_before_its_count_is_not_counting(
    database: Database, clean_db: AirflowDatabase
) -> None:
    """Its count stopped (shutdown) and it was cancelled: nothing is left to plan or count."""
    created = await count_stopped(database, clean_db)
    restarted = BackfillEngine(database)  # it never ticks here: nothing counts the plan again
    cancelled = await restarted.cancel(created.id)
    assert cancelled.progress.planned == cancelled.progress.written == created.progress.written
    assert not cancelled.progress.planned_is_counting
    message = backfill_message(await restarted.get(cancelled.id, with_estimate=True))
    assert not message.progress.planned_is_counting and not message.HasField("estimate")  # ended


async def cli_json(server: SidecarServer, *args: str) -> Any:
    """What ``airflow-sidecar backfill ARGS -o json`` prints, asked of ``server`` (on this loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "backfill", "--target", f"127.0.0.1:{server.port}", *args, "-o", "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_every_json_says_the_runs_left_are_not_known_while_the_plan_is_counted(
    http: httpx.AsyncClient,
    server: SidecarServer,
    database: Database,
    sql: psycopg2.extensions.cursor,
    clean_db: AirflowDatabase,
) -> None:
    """``/v1`` (proto3 JSON) leaves them out; ``/api/v2`` and the CLI's JSON say null. Never 0.

    On the wire ``runs_remaining`` is 0 (a plain ``int64``, kept so for the clients generated from
    it); the gateway's JSON leaves it out, as proto3 JSON allows for a field at its default.
    """
    history(sql)
    # Made in-process, so that the count is held from the moment the create answers; read
    # over the gateway (/v1 and Airflow's /api/v2) and the CLI from the server's own engine.
    created = await BackfillEngine(database).create(spec(**LONG))
    assert not isinstance(created, DryRun)
    name = f"backfills/{created.id}"
    with count_held(clean_db, created.id):
        got = (await http.get(f"/v1/{name}")).json()["backfill"]
        assert got["progress"]["plannedIsCounting"] is True
        assert got["progress"]["planned"] == got["progress"]["written"] == str(created.progress.written)
        assert got["estimate"]["planIsCounting"] is True and got["estimate"]["runDurationP50"] == "3600s"
        assert not {"runsRemaining", "remainingP50", "remainingP90"} & got["estimate"].keys()
        v2 = (await http.get(f"/api/v2/backfills/{created.id}")).json()["estimate"]
        assert v2["plan_is_counting"] is True and v2["run_duration_p50_seconds"] == 3600
        assert (v2["runs_remaining"], v2["remaining_p50_seconds"], v2["remaining_p90_seconds"]) == (None,) * 3
        (shown,) = await cli_json(server, "get", str(created.id))
        e = shown["estimate"]
        assert shown["progress"]["planned_is_counting"] is True
        assert e["plan_is_counting"] is True and e["run_duration_p50"] == "3600s"
        assert (e["runs_remaining"], e["remaining_p50"], e["remaining_p90"]) == (None,) * 3

    async def landed() -> dict[str, Any] | None:
        backfill: dict[str, Any] = (await http.get(f"/v1/{name}")).json()["backfill"]
        return None if backfill["progress"]["plannedIsCounting"] else backfill

    done = await async_wait_until(landed, 120, 0.05, "the background count")
    assert done["progress"]["planned"] == str(PLANNED)
    assert done["estimate"]["planIsCounting"] is False and done["estimate"]["runsRemaining"] == str(PLANNED)
    v2 = (await http.get(f"/api/v2/backfills/{created.id}")).json()
    assert (v2["estimate"]["plan_is_counting"], v2["estimate"]["runs_remaining"]) == (False, PLANNED)
    (shown,) = await cli_json(server, "get", str(created.id))
    assert (shown["estimate"]["runs_remaining"], shown["estimate"]["remaining_p50"]) == (
        str(PLANNED),
        f"{PLANNED * 3600}s",
    )


async def test_a_set_aside_backfill_is_counted_by_the_next_tick(
    database: Database, sql: psycopg2.extensions.cursor, clean_db: AirflowDatabase
) -> None:
    """Its progress says 'counting' while runs remain to be written: a restart's tick counts it."""
    created = await count_stopped(database, clean_db)
    sql.execute(  # writing its runs failed for good meanwhile
        "UPDATE airflow_sidecar.sidecar_backfill SET phase = 'set_aside' WHERE backfill_id = %s",
        (created.id,),
    )
    restarted = BackfillEngine(database)
    assert (await restarted.get(created.id)).progress.planned_is_counting
    await restarted.tick()
    done = await counted(restarted, created.id)
    assert done.progress.planned == PLANNED
    await restarted.close()


async def test_a_count_landing_after_a_cancel_leaves_the_slots_written(
    database: Database, clean_db: AirflowDatabase
) -> None:
    """A count still running when the backfill is cancelled must not promise its whole plan."""
    created = await count_stopped(database, clean_db)  # stands in for a count landing after the cancel
    engine = BackfillEngine(database)
    await engine.cancel(created.id)
    await engine.tx.write(lambda conn: record_planned_count(conn, created.id, PLANNED))  # lands late
    view = await engine.get(created.id)
    assert view.progress.planned == view.progress.written == created.progress.written
    assert not view.progress.planned_is_counting


async def test_a_count_that_keeps_failing_is_tried_again_later_not_on_every_tick(
    database: Database, sql: psycopg2.extensions.cursor, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording the count fails (a real database error, from a trigger) until the trigger goes.

    The counter's clock is the test's: the waits are stepped through, never slept.
    """
    sql.execute("CREATE SEQUENCE count_fault")  # one number per count that got as far as its write
    sql.execute(
        "CREATE FUNCTION count_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM nextval('count_fault'); RAISE EXCEPTION 'injected' USING ERRCODE = 'XX000'; END $$"
    )
    fault = (
        "CREATE TRIGGER count_fault BEFORE UPDATE ON airflow_sidecar.sidecar_backfill FOR EACH ROW"
        " WHEN (OLD.planned_count IS NULL AND NEW.planned_count IS NOT NULL) EXECUTE FUNCTION count_fault()"
    )
    sql.execute(fault)
    now = [0.0]
    engine = BackfillEngine(database)
    engine._counter = BackgroundCounter(engine.tx, clock=lambda: now[0])

    async def counts_tried(at: float, ticks: int = 1) -> int:
        now[0] = at
        for _ in range(ticks):
            await engine.tick()
            while tasks := list(engine._counter._tasks.values()):  # the count a tick started ends
                await asyncio.gather(*tasks)
        sql.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM count_fault")
        return int(sql.fetchone()[0])

    caplog.set_level(logging.ERROR, logger="sidecar.engine._counting")
    try:
        created = await engine.create(spec(**LONG))  # its count starts, and fails
        assert not isinstance(created, DryRun)
        assert await counts_tried(0.0, ticks=5) == 1  # not restarted by every tick
        assert await counts_tried(RETRY_FIRST - 1) == 1
        assert await counts_tried(RETRY_FIRST) == 2  # tried again once the wait is over ...
        assert await counts_tried(2 * RETRY_FIRST, ticks=3) == 2  # ... and the next wait is twice as long
        sql.execute("DROP TRIGGER count_fault ON airflow_sidecar.sidecar_backfill")
        assert await counts_tried(3 * RETRY_FIRST) == 2
        assert (await engine.get(created.id)).progress.planned == PLANNED  # the third try landed
        # The success cleared the failures: uncounted again, a failing count is tried at once ...
        sql.execute(
            "UPDATE airflow_sidecar.sidecar_backfill SET planned_count = NULL WHERE backfill_id = %s",
            (created.id,),
        )
        sql.execute(fault)
        assert await counts_tried(3 * RETRY_FIRST + 1) == 3
        # ... and the record of a backfill no tick visits any more (cancelled) is dropped.
        await engine.cancel(created.id)
        await engine.tick()
        assert created.id not in engine._counter._failed
    finally:
        sql.execute(
            "DROP TRIGGER IF EXISTS count_fault ON airflow_sidecar.sidecar_backfill;"
            " DROP FUNCTION count_fault(); DROP SEQUENCE count_fault"
        )
    failures = [r.getMessage() for r in caplog.records if "counting its plan failed" in r.getMessage()]
    assert [m.rpartition("(")[2] for m in failures] == [
        f"failure 1 in a row); trying again in {RETRY_FIRST:g} s",
        f"failure 2 in a row); trying again in {2 * RETRY_FIRST:g} s",
        f"failure 1 in a row); trying again in {RETRY_FIRST:g} s",  # not failure 3
    ]
    await engine.close()
