"""The gRPC API end to end over loopback: a real grpc.aio server on a real Airflow 3.3.2 schema."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg2.extensions
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.auth import AuthConfig
from sidecar.errors import SchemaMismatch
from sidecar.server import ServerConfig, SidecarServer

THREE = "sidecar_e2e_three"


def ts(year: int, month: int, day: int) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.datetime(year, month, day, tzinfo=dt.UTC))
    return out


@pytest.fixture
async def channel(server: SidecarServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def create_request(**fields: object) -> pb.CreateBackfillRequest:
    backfill = pb.Backfill(dag_id=THREE, from_date=ts(2025, 1, 1), to_date=ts(2025, 1, 5), max_active_runs=2)
    for key, value in fields.items():
        setattr(backfill, key, value)
    return pb.CreateBackfillRequest(backfill=backfill)


def details(error: grpc.aio.AioRpcError) -> tuple[list[str], list[tuple[str, str]]]:
    """ErrorInfo reasons and BadRequest field violations of a rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reasons, violations = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return reasons, violations


async def test_create_get_list_runs_pause_cancel_watch(
    channel: grpc.aio.Channel, sql: psycopg2.extensions.cursor
) -> None:
    stub = backfill_pb2_grpc.BackfillServiceStub(channel)
    created = (await stub.CreateBackfill(create_request(dag_run_conf='{"a": 1}'))).backfill
    assert created.name == f"backfills/{created.id}"
    assert created.state == pb.Backfill.STATE_ACTIVE
    assert created.mode == pb.MODE_WINDOWED
    assert (created.progress.planned, created.progress.written, created.progress.queued) == (5, 4, 4)
    sql.execute("SELECT DISTINCT conf FROM dag_run")
    assert sql.fetchall() == [({"a": 1},)]

    got = (await stub.GetBackfill(pb.GetBackfillRequest(name=created.name))).backfill
    assert got.dag_run_conf == '{"a": 1}'
    listed = await stub.ListBackfills(pb.ListBackfillsRequest(dag_id=THREE))
    assert [b.id for b in listed.backfills] == [created.id]
    runs = await stub.ListBackfillRuns(pb.ListBackfillRunsRequest(parent=created.name, page_size=2))
    assert [r.sort_ordinal for r in runs.runs] == [1, 2]
    assert runs.runs[0].run_id == "backfill__2025-01-01T00:00:00+00:00"
    more = await stub.ListBackfillRuns(
        pb.ListBackfillRunsRequest(parent=created.name, page_size=10, page_token=runs.next_page_token)
    )
    assert [(r.sort_ordinal, r.disposition) for r in more.runs] == [
        (3, pb.DISPOSITION_CREATE),
        (4, pb.DISPOSITION_CREATE),
        (5, pb.DISPOSITION_PENDING),
    ]
    assert more.next_page_token == ""

    paused = (await stub.PauseBackfill(pb.PauseBackfillRequest(name=created.name))).backfill
    assert paused.state == pb.Backfill.STATE_PAUSED and paused.is_paused
    stream = stub.WatchBackfill(pb.WatchBackfillRequest(name=created.name))
    first = await stream.read()
    assert first.backfill.state == pb.Backfill.STATE_PAUSED
    await stub.CancelBackfill(pb.CancelBackfillRequest(name=created.name))
    states = [first.backfill.state]
    while (update := await stream.read()) is not grpc.aio.EOF:
        states.append(update.backfill.state)
    assert states[-1] == pb.Backfill.STATE_CANCELLED

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.PauseBackfill(pb.PauseBackfillRequest(name=created.name))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(excinfo.value)[0] == ["INVALID_STATE_TRANSITION"]


async def test_dry_run_returns_the_plan_and_writes_nothing(
    channel: grpc.aio.Channel, sql: psycopg2.extensions.cursor
) -> None:
    stub = backfill_pb2_grpc.BackfillServiceStub(channel)
    request = create_request(run_backwards=True)
    request.validate_only = True
    response = await stub.CreateBackfill(request)
    assert response.backfill.id == 0
    assert [r.sort_ordinal for r in response.planned_runs] == [1, 2, 3, 4, 5]
    assert response.planned_runs[0].run_id == "backfill__2025-01-05T00:00:00+00:00"
    assert {r.disposition for r in response.planned_runs} == {pb.DISPOSITION_CREATE}
    sql.execute("SELECT (SELECT count(*) FROM backfill), (SELECT count(*) FROM dag_run)")
    assert sql.fetchone() == (0, 0)


@pytest.mark.parametrize(
    ("fields", "code", "reason", "field"),
    [
        ({"dag_id": "missing"}, grpc.StatusCode.NOT_FOUND, "DAG_NOT_FOUND", None),
        ({"dag_id": "sidecar_it_manual"}, grpc.StatusCode.FAILED_PRECONDITION, "NON_PERIODIC_SCHEDULE", None),
        (
            {"max_active_runs": 0},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "backfill.max_active_runs",
        ),
        (
            {"dag_run_conf": "[1, 2]"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "backfill.dag_run_conf",
        ),
        (
            {"dag_run_conf": "{oops"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "backfill.dag_run_conf",
        ),
        (
            {"from_date": ts(2025, 2, 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_DATE_RANGE",
            "backfill.from_date",
        ),
        (
            {"from_date": None},  # unset
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "backfill.from_date",
        ),
        ({"dag_id": "x" * 300}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "backfill.dag_id"),
    ],
)
async def test_errors_carry_rich_status_and_write_nothing(
    channel: grpc.aio.Channel,
    sql: psycopg2.extensions.cursor,
    fields: dict[str, object],
    code: grpc.StatusCode,
    reason: str,
    field: str | None,
) -> None:
    stub = backfill_pb2_grpc.BackfillServiceStub(channel)
    request = create_request()
    for key, value in fields.items():
        if value is None:
            request.backfill.ClearField(key)
        elif isinstance(value, Timestamp):
            getattr(request.backfill, key).CopyFrom(value)
        else:
            setattr(request.backfill, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CreateBackfill(request)
    assert excinfo.value.code() == code
    reasons, violations = details(excinfo.value)
    assert reasons == [reason]
    if field is not None:
        assert [v[0] for v in violations] == [field]
    sql.execute("SELECT (SELECT count(*) FROM backfill), (SELECT count(*) FROM dag_run)")
    assert sql.fetchone() == (0, 0)


async def test_bad_names_and_tokens(channel: grpc.aio.Channel) -> None:
    stub = backfill_pb2_grpc.BackfillServiceStub(channel)
    for name in (
        "7",
        "backfills/",
        "backfills/abc",
        "backfills/1;drop table dag_run",
        "backfills/99999999999",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.GetBackfill(pb.GetBackfillRequest(name=name))
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.GetBackfill(pb.GetBackfillRequest(name="backfills/424242"))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.ListBackfills(pb.ListBackfillsRequest(page_token="garbage"))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_pages_newest_first(channel: grpc.aio.Channel, sql: psycopg2.extensions.cursor) -> None:
    stub = backfill_pb2_grpc.BackfillServiceStub(channel)
    ids = []
    for month in (1, 2, 3):
        request = create_request()
        request.backfill.from_date.CopyFrom(ts(2024, month, 1))
        request.backfill.to_date.CopyFrom(ts(2024, month, 2))
        created = (await stub.CreateBackfill(request)).backfill
        ids.append(created.id)
        await stub.CancelBackfill(pb.CancelBackfillRequest(name=created.name))
    page = await stub.ListBackfills(pb.ListBackfillsRequest(page_size=2))
    assert [b.id for b in page.backfills] == [ids[2], ids[1]]
    rest = await stub.ListBackfills(pb.ListBackfillsRequest(page_size=2, page_token=page.next_page_token))
    assert [b.id for b in rest.backfills] == [ids[0]]
    assert rest.next_page_token == ""
    cancelled = await stub.ListBackfills(pb.ListBackfillsRequest(state=pb.Backfill.STATE_CANCELLED))
    assert len(cancelled.backfills) == 3
    active = await stub.ListBackfills(pb.ListBackfillsRequest(state=pb.Backfill.STATE_ACTIVE))
    assert list(active.backfills) == []


async def test_tick_health_and_reflection(channel: grpc.aio.Channel) -> None:
    tick = await scheduler_pb2_grpc.SchedulerServiceStub(channel).Tick(
        scheduler_pb2.TickRequest(scheduler_id="t")
    )
    assert tick.runs_written == 0
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="airflow_sidecar.v1.BackfillService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for r in responses for s in r.list_services_response.service]
    assert "airflow_sidecar.v1.BackfillService" in names
    assert "airflow_sidecar.v1.SchedulerService" in names


async def test_start_refuses_a_database_without_airflow_schema(tmp_path: Path) -> None:
    server = SidecarServer(
        ServerConfig(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
            listen="127.0.0.1:0",
            auth=AuthConfig(no_auth=True),
        )
    )
    with pytest.raises(SchemaMismatch, match="no Airflow metadata schema"):
        await server.start()
    await server.stop()
