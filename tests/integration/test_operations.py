"""Operations: metrics, probes, structured logs and traces of a real server on the real schema."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sidecar.server as server_module
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.auth import AuthConfig
from sidecar.engine import BackfillEngine
from sidecar.gateway import GatewayConfig, create_app
from sidecar.observability import JsonFormatter, OpsServer, log_context, setup_tracing
from sidecar.server import SidecarServer
from sidecar.store import connect
from tests.integration.conftest import running_server
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port

NO_AUTH = AuthConfig(no_auth=True)


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
async def server(clean_db: AirflowDatabase) -> AsyncIterator[SidecarServer]:
    async with running_server(clean_db, tick_interval=0.2, ops_listen="127.0.0.1:0") as srv:
        yield srv


def timestamp(day: int) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime(2025, 1, day, tzinfo=dt.UTC))
    return ts


async def test_probes_and_metrics(server: SidecarServer) -> None:
    assert await http_get(server.ops_port, "/healthz") == (200, "ok\n")
    assert await http_get(server.ops_port, "/readyz") == (200, "ready\n")
    assert (await http_get(server.ops_port, "/nope"))[0] == 404
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        await stub.CreateBackfill(
            pb.CreateBackfillRequest(
                backfill=pb.Backfill(dag_id="sidecar_e2e_three", from_date=timestamp(1), to_date=timestamp(3))
            )
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetBackfill(pb.GetBackfillRequest(name="backfills/999999"))

    async def metrics_show_the_backfill() -> str:
        while True:
            status, body = await http_get(server.ops_port, "/metrics")
            assert status == 200
            if 'sidecar_backfills{state="active"} 1.0' in body:
                return body
            await asyncio.sleep(0.1)

    body = await asyncio.wait_for(metrics_show_the_backfill(), 20)
    assert 'sidecar_rpc_seconds_count{code="OK",method="CreateBackfill"}' in body
    assert 'sidecar_rpc_seconds_count{code="NOT_FOUND",method="GetBackfill"}' in body
    assert 'sidecar_backfill_queued_runs{backfill_id="' in body
    assert "sidecar_tick_seconds_count" in body
    assert "sidecar_runs_written_total" in body


async def test_readiness_fails_when_the_database_is_unreachable() -> None:
    db = connect(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")
    ops = OpsServer("127.0.0.1", 0, BackfillEngine(db).database_ready, ready_timeout=5)
    await ops.start()
    try:
        assert await http_get(ops.port, "/readyz") == (503, "database unreachable\n")
        assert (await http_get(ops.port, "/healthz"))[0] == 200
    finally:
        await ops.stop()
        await db.dispose()


def test_json_logs_carry_backfill_and_dag_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sidecar.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(backfill_id=7, dag_id="etl"):
            logger.info("wrote %s runs", 3, extra={"batch": 1})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "wrote 3 runs"
    assert (first["backfill_id"], first["dag_id"], first["batch"], first["level"]) == (7, "etl", 1, "info")
    assert "backfill_id" not in second


async def test_traces_continue_the_callers_trace_down_to_the_database(
    clean_db: AirflowDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(server_module, "setup_tracing", lambda: setup_tracing(provider))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with (
        running_server(clean_db) as srv,
        grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel,
    ):
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetBackfill(
                pb.GetBackfillRequest(name="backfills/1"),
                metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),),
            )
    spans = exporter.get_finished_spans()
    rpc = [s for s in spans if s.name.endswith("GetBackfill")]
    sql = [s for s in spans if s.attributes and "db.statement" in s.attributes]
    assert rpc, [s.name for s in spans]
    assert f"{rpc[0].context.trace_id:032x}" == trace_id
    assert any(s.context.trace_id == rpc[0].context.trace_id for s in sql), [s.name for s in spans]


async def test_one_trace_from_the_gateway_through_grpc_to_the_database(
    clean_db: AirflowDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(server_module, "setup_tracing", lambda: setup_tracing(provider))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with running_server(clean_db) as srv:
        gateway = create_app(GatewayConfig(target=f"127.0.0.1:{srv.port}", tracer_provider=provider))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gw"
        ) as http:
            response = await http.get(
                "/v1/backfills", headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
            )
        await gateway.upstream.close()
    assert response.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    http_span = spans["GET /v1/backfills"]
    rpc_span = spans["/airflow_sidecar.v1.BackfillService/ListBackfills"]
    sql_spans = [s for s in exporter.get_finished_spans() if s.attributes and "db.statement" in s.attributes]
    assert f"{http_span.context.trace_id:032x}" == trace_id
    assert rpc_span.parent is not None and rpc_span.parent.span_id == http_span.context.span_id
    assert any(s.context.trace_id == http_span.context.trace_id for s in sql_spans)
