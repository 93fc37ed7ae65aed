"""One backfill's failure stays its own (issue 10): a poisoned backfill, transient failures.

Against a real server on the real Airflow schema in PostgreSQL. A backfill whose runs the
database refuses (forced past validation: its rows are inserted by the store directly,
with a conf ``jsonb`` cannot hold) is ticked with three healthy ones: Tick answers OK,
the healthy ones are written to the end and complete, the poisoned one is set aside
with its reason in Get, a log line and a metric, Airflow's timer cannot complete it,
and cancel works on it. A transient failure (SQLSTATE classes 08, 40, 53, 57 and a
terminated backend, raised by a trigger inside the batch's own transaction) is retried,
visibly, tick after tick, and the backfill completes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import grpc
import psycopg2.extensions
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import scheduler_pb2
from sidecar.observability import REGISTRY
from sidecar.server import SidecarServer
from sidecar.store import DagCatalog, Database, NewBackfill, connect, insert_backfill, prepare
from sidecar.store._database import _MIGRATIONS
from sidecar.store._tables import FAILURE_COLUMNS
from sidecar.vocabulary import Mode, ReprocessBehavior
from tests.security.test_errors_leak import (
    LEAKS,
    THREE,
    TICK,
    call,
    create_request,
)
from tests.support.fixtures import AirflowDatabase

HEALTHY = ("sidecar_e2e_three", "sidecar_it_interval", "sidecar_it_params")
POISONED_DAG = "sidecar_it_no_backfill"  # any DAG: validation (and its "backfill not allowed") is bypassed
DAY = dt.timedelta(days=1)


async def insert_poisoned(db: AirflowDatabase, dag_id: str, conf: dict[str, object]) -> int:
    """A backfill's rows written by the store directly, past every check, with a conf no run can carry."""
    database = connect(db.asyncpg_url)
    try:
        async with database.engine.begin() as conn:
            loaded = await DagCatalog().load(conn, dag_id)
            assert loaded is not None
            now = dt.datetime.now(dt.UTC)
            backfill_id = await insert_backfill(
                conn,
                NewBackfill(
                    dag_id=dag_id,
                    from_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                    to_date=dt.datetime(2025, 1, 5, tzinfo=dt.UTC),
                    dag_run_conf=conf,
                    reprocess_behavior=ReprocessBehavior.NONE,
                    max_active_runs=2,
                    triggering_user_name="test",
                    mode=Mode.WINDOWED,
                    run_backwards=False,
                    timetable=loaded.template.timetable,
                    planned_count=5,
                    request_id=None,
                    request_fingerprint="poisoned",
                    now=now,
                ),
            )
            assert backfill_id is not None
            return backfill_id
    finally:
        await database.dispose()


async def tick(channel: grpc.aio.Channel) -> scheduler_pb2.TickResponse:
    answer = await call(
        channel, TICK, scheduler_pb2.TickRequest(scheduler_id="s"), scheduler_pb2.TickResponse
    )
    assert isinstance(answer, scheduler_pb2.TickResponse), (
        answer
    )  # Tick answers OK, whatever one backfill does
    return answer


async def get(channel: grpc.aio.Channel, backfill_id: int) -> pb.Backfill:
    answer = await call(
        channel, "GetBackfill", pb.GetBackfillRequest(name=f"backfills/{backfill_id}"), pb.GetBackfillResponse
    )
    assert isinstance(answer, pb.GetBackfillResponse), answer
    return answer.backfill


def finish_queued_runs(sql: psycopg2.extensions.cursor) -> None:
    """What the scheduler would do, in short: every queued run succeeds."""
    sql.execute("UPDATE dag_run SET state = 'success', end_date = now() WHERE state IN ('queued', 'running')")


def set_aside_count(reason: str) -> float:
    return REGISTRY.get_sample_value("sidecar_backfills_set_aside_total", {"reason": reason}) or 0.0


async def create(channel: grpc.aio.Channel, dag_id: str, **fields: object) -> int:
    request = create_request(dag_id)
    request.backfill.to_date.FromJsonString("2025-01-08T00:00:00Z")
    request.backfill.max_active_runs = 1
    if dag_id == "sidecar_it_params":
        request.backfill.dag_run_conf = '{"batch": 2}'
    created = await call(channel, "CreateBackfill", request, pb.CreateBackfillResponse)
    assert isinstance(created, pb.CreateBackfillResponse), created
    return created.backfill.id


@pytest.mark.parametrize("conf", [{"a": "\x00"}, {"a": "\ud800"}], ids=["nul", "lone surrogate"])
async def test_a_poisoned_backfill_is_set_aside_and_the_others_are_written(
    conf: dict[str, object],
    server: SidecarServer,
    channel: grpc.aio.Channel,
    clean_db: AirflowDatabase,
    sql: psycopg2.extensions.cursor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    healthy = [await create(channel, dag_id) for dag_id in HEALTHY]
    poisoned = await insert_poisoned(clean_db, POISONED_DAG, conf)
    before = set_aside_count("data_exception")

    with caplog.at_level(logging.WARNING):
        answer = await tick(channel)
    assert poisoned in answer.materializing_backfill_ids  # the shim holds Airflow's timer off it
    backfill = await get(channel, poisoned)
    assert backfill.state == pb.Backfill.STATE_ACTIVE
    failure = backfill.write_failure
    assert failure.set_aside and failure.attempts == 1
    assert failure.reason == "data_exception"
    assert "SQLSTATE 22" in failure.message and "correlation id" in failure.message
    for word in LEAKS:
        assert word not in failure.message
    assert set_aside_count("data_exception") == before + 1
    lines = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert len(lines) == 1 and f"backfill {poisoned} set aside" in lines[0].getMessage()
    assert failure.message.rsplit(" ", 1)[-1] in lines[0].getMessage()  # the correlation id
    sql.execute("SELECT count(*) FROM dag_run WHERE backfill_id = %s", (poisoned,))
    assert sql.fetchone() == (0,)

    # Airflow's completion timer marks it complete: it stays set aside (its runs are not written).
    sql.execute("UPDATE backfill SET completed_at = now() WHERE id = %s", (poisoned,))
    for _ in range(12):
        finish_queued_runs(sql)
        answer = await tick(channel)
        assert poisoned in answer.materializing_backfill_ids
    for backfill_id in healthy:
        done = await get(channel, backfill_id)
        assert done.state == pb.Backfill.STATE_COMPLETED, done
        assert done.progress.written == done.progress.succeeded == done.progress.planned >= 7
        assert not done.HasField("write_failure")
    again = await get(channel, poisoned)
    assert again.state == pb.Backfill.STATE_ACTIVE and again.write_failure.set_aside
    assert again.write_failure.attempts == 1  # a set-aside backfill is not tried again by ticks
    runs = await call(
        channel,
        "ListBackfillRuns",
        pb.ListBackfillRunsRequest(parent=f"backfills/{poisoned}"),
        pb.ListBackfillRunsResponse,
    )
    assert isinstance(runs, pb.ListBackfillRunsResponse) and len(runs.runs) == 5
    assert {r.disposition for r in runs.runs} == {pb.DISPOSITION_PENDING}

    # Its DAG is held by it (one open backfill per DAG) until it is cancelled; cancel works.
    cancelled = await call(
        channel,
        "CancelBackfill",
        pb.CancelBackfillRequest(name=f"backfills/{poisoned}"),
        pb.CancelBackfillResponse,
    )
    assert isinstance(cancelled, pb.CancelBackfillResponse), cancelled
    assert cancelled.backfill.state == pb.Backfill.STATE_CANCELLED
    assert not cancelled.backfill.HasField("write_failure")
    assert poisoned not in (await tick(channel)).materializing_backfill_ids


async def test_unpausing_a_set_aside_backfill_retries_it(
    server: SidecarServer,
    channel: grpc.aio.Channel,
    clean_db: AirflowDatabase,
    sql: psycopg2.extensions.cursor,
) -> None:
    poisoned = await insert_poisoned(clean_db, POISONED_DAG, {"a": "\x00"})
    await tick(channel)
    assert (await get(channel, poisoned)).write_failure.set_aside
    # The cause is fixed (here: the conf), and the backfill is resumed by unpausing it.
    sql.execute('UPDATE backfill SET dag_run_conf = \'{"a": "fixed"}\' WHERE id = %s', (poisoned,))
    resumed = await call(
        channel,
        "UnpauseBackfill",
        pb.UnpauseBackfillRequest(name=f"backfills/{poisoned}"),
        pb.UnpauseBackfillResponse,
    )
    assert isinstance(resumed, pb.UnpauseBackfillResponse), resumed
    assert not resumed.backfill.HasField("write_failure")
    await tick(channel)
    backfill = await get(channel, poisoned)
    assert not backfill.HasField("write_failure")
    assert backfill.progress.written > 0


@pytest.fixture
def transient_failures(sql: psycopg2.extensions.cursor, request: pytest.FixtureRequest) -> Iterator[int]:
    """The next ``failures`` ``dag_run`` inserts fail with ``sqlstate`` (a sequence counts across rollbacks)."""
    sqlstate, failures = request.param
    action = (
        "PERFORM pg_terminate_backend(pg_backend_pid())"
        if sqlstate == "terminate"
        else f"RAISE EXCEPTION 'transient, by the test' USING ERRCODE = '{sqlstate}'"
    )
    sql.execute("CREATE SEQUENCE transient_failures")
    sql.execute(
        "CREATE FUNCTION fail_transiently() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN IF nextval('transient_failures') <= {failures} THEN {action}; END IF; RETURN NEW; END $$"
    )
    try:
        yield failures
    finally:
        sql.execute("DROP TRIGGER IF EXISTS fail_transiently ON dag_run")
        sql.execute("DROP FUNCTION fail_transiently()")
        sql.execute("DROP SEQUENCE transient_failures")


# The store retries a transaction 3 times within a call: 4 failures span two ticks.
@pytest.mark.parametrize(
    ("transient_failures", "reason"),
    [
        (("40001", 4), "serialization_failure"),
        (("40P01", 4), "deadlock"),
        (("08006", 4), "connection"),
        (("53300", 4), "insufficient_resources"),
        (("57P01", 4), "connection"),
        (("terminate", 4), "connection"),
    ],
    indirect=["transient_failures"],
    ids=["40001", "40P01", "08006", "53300", "57P01", "pg_terminate_backend"],
)
async def test_a_transient_failure_is_retried_and_the_backfill_completes(
    transient_failures: int,
    reason: str,
    server: SidecarServer,
    channel: grpc.aio.Channel,
    sql: psycopg2.extensions.cursor,
) -> None:
    backfill_id = await create(channel, THREE)
    finish_queued_runs(sql)
    sql.execute(
        "CREATE TRIGGER fail_transiently BEFORE INSERT ON dag_run FOR EACH ROW EXECUTE FUNCTION fail_transiently()"
    )
    await tick(channel)  # three tries in the tick's batch, all failing
    failing = await get(channel, backfill_id)
    assert failing.state == pb.Backfill.STATE_ACTIVE
    assert failing.write_failure.reason == reason
    assert not failing.write_failure.set_aside and failing.write_failure.attempts == 1
    await tick(channel)  # the fourth try fails, the fifth commits
    recovered = await get(channel, backfill_id)
    assert not recovered.HasField("write_failure"), recovered.write_failure
    for _ in range(10):
        finish_queued_runs(sql)
        await tick(channel)
    done = await get(channel, backfill_id)
    assert done.state == pb.Backfill.STATE_COMPLETED, done
    assert done.progress.succeeded == done.progress.planned == 8


async def test_migration_step_2_adds_the_reason_columns_to_an_existing_table(
    database: Database, sql: psycopg2.extensions.cursor
) -> None:
    # A database a release before this one migrated: step 1 only.
    for column in FAILURE_COLUMNS:
        sql.execute(f"ALTER TABLE airflow_sidecar.sidecar_backfill DROP COLUMN {column.name}")
    sql.execute(
        "DELETE FROM airflow_sidecar.sidecar_schema_version WHERE version >= 2"
    )  # and the steps after it
    await prepare(database)
    sql.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'airflow_sidecar' AND table_name = 'sidecar_backfill' AND column_name LIKE 'fail%'"
    )
    assert sorted(name for (name,) in sql.fetchall()) == sorted(c.name for c in FAILURE_COLUMNS)
    sql.execute("SELECT max(version) FROM airflow_sidecar.sidecar_schema_version")
    assert sql.fetchone() == (len(_MIGRATIONS),)  # step 2 and every step since
    await prepare(database)  # idempotent
