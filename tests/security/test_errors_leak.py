"""Errors say what to do, never how the server is built (issue 10, "Internals leak").

Every trigger of the issue is replayed over gRPC, ``/v1`` and ``/api/v2`` (where the route
exists) against a real server on the real Airflow schema. What the caller sees must hold no
exception text, SQL, schema name or traceback; a failure the server did not foresee must be
``INTERNAL`` (HTTP 500) with a correlation id, and the server's log line under that id must
hold the details (the exception and its traceback).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import psycopg2.extensions
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc, scheduler_pb2
from sidecar.api import BackfillServicer, ErrorBoundary
from sidecar.api._convert import MAX_CONF_DEPTH
from sidecar.api._errors import CORRELATION_METADATA
from sidecar.auth import PageTokens
from sidecar.engine import BackfillEngine
from sidecar.gateway import GatewayConfig, create_app
from sidecar.observability import CORRELATION_KEY
from sidecar.server import SidecarServer

THREE = "sidecar_e2e_three"
SERVICE = "/airflow_sidecar.v1.BackfillService/"
TICK = "/airflow_sidecar.v1.SchedulerService/Tick"
FROM, TO = "2025-01-01T00:00:00Z", "2025-01-03T00:00:00Z"
#: Words that only an internal detail would put in an answer.
LEAKS = (
    "Unexpected",
    "Traceback",
    'File "',
    "airflow_sidecar",
    "sidecar_backfill",
    "INSERT",
    "SELECT",
    "UPDATE ",
    "asyncpg",
    "sqlalchemy",
    "psycopg",
    "Error:",
)
#: (method, request, response class) of every BackfillService method, for a given backfill name.
_Call = tuple[str, Message, type[Message]]


def assert_clean(text: str) -> None:
    """No internal detail in what a caller sees."""
    for word in LEAKS:
        assert word not in text, (word, text[:500])


def create_request(dag_id: str = THREE, conf: str = "", **fields: Any) -> pb.CreateBackfillRequest:
    backfill = pb.Backfill(dag_id=dag_id, dag_run_conf=conf)
    backfill.from_date.FromJsonString(FROM)
    backfill.to_date.FromJsonString(TO)
    return pb.CreateBackfillRequest(backfill=backfill, **fields)


@pytest.fixture
async def channel(server: SidecarServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def call(
    channel: grpc.aio.Channel, method: str, request: Message, response_class: type[Message]
) -> grpc.aio.AioRpcError | Message:
    """One call by path: its response, or the error it failed with."""
    path = method if method.startswith("/") else SERVICE + method
    stub = channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        response: Message = await stub(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error
    return response


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {error}")


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


def logged(caplog: pytest.LogCaptureFixture, correlation_id: str) -> logging.LogRecord:
    """The log record that holds the details of the failure ``correlation_id`` names."""
    found = [r for r in caplog.records if getattr(r, CORRELATION_KEY, None) == correlation_id]
    assert len(found) == 1, (correlation_id, [r.getMessage() for r in caplog.records])
    record = found[0]
    assert correlation_id in record.getMessage()
    assert record.levelno == logging.ERROR
    return record


def assert_internal(error: grpc.aio.AioRpcError, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """INTERNAL with one correlation id in message, ErrorInfo and trailing metadata, logged in full."""
    assert error.code() is grpc.StatusCode.INTERNAL, (error.code(), error.details())
    assert_clean(error.details() or "")
    info = error_info(error)
    correlation_id = info.metadata[CORRELATION_KEY]
    assert info.reason == "INTERNAL"
    assert len(correlation_id) == 16
    assert correlation_id in (error.details() or "")
    assert (CORRELATION_METADATA, correlation_id) in tuple(error.trailing_metadata() or ())
    record = logged(caplog, correlation_id)
    assert record.exc_info is not None  # the traceback is in the log, not in the answer
    return record


def assert_grpc_safe(outcome: grpc.aio.AioRpcError | Message, caplog: pytest.LogCaptureFixture) -> None:
    """A deliberate answer, or INTERNAL with a correlation id; never UNKNOWN or internals."""
    if not isinstance(outcome, grpc.aio.AioRpcError):
        return
    assert outcome.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS), outcome.details()
    assert_clean(outcome.details() or "")
    if outcome.code() is grpc.StatusCode.INTERNAL:
        assert_internal(outcome, caplog)


def assert_http_safe(response: httpx.Response, caplog: pytest.LogCaptureFixture) -> None:
    """A JSON answer without internals; a 5xx is a 500 naming a logged correlation id."""
    assert_clean(response.text)
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code < 500:
        return
    assert response.status_code == 500, response.text
    if "detail" in body:
        detail = body["detail"]
        assert detail.startswith("Internal Server Error (correlation id "), detail
        correlation_id = detail.rsplit(" ", 1)[-1].rstrip(")")
    else:
        assert body["error"]["status"] == "INTERNAL"
        (info,) = [d for d in body["error"]["details"] if d["@type"].endswith("ErrorInfo")]
        correlation_id = info["metadata"][CORRELATION_KEY]
        assert correlation_id in body["error"]["message"]
    logged(caplog, correlation_id)


def token_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def nested(depth: int) -> Any:
    """A JSON object nesting ``depth`` levels of objects and arrays."""
    value: Any = {"leaf": 1}
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return value


def count_backfills(sql: psycopg2.extensions.cursor) -> int:
    sql.execute("SELECT count(*) FROM backfill")
    return int(sql.fetchone()[0])


async def test_nul_in_ids_and_filters(
    channel: grpc.aio.Channel, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    grpc_cases: list[_Call] = [
        ("CreateBackfill", create_request("a\x00b"), pb.CreateBackfillResponse),
        ("CreateBackfill", create_request("a\x00b", validate_only=True), pb.CreateBackfillResponse),
        ("CreateBackfill", create_request(request_id="r\x00"), pb.CreateBackfillResponse),
        ("ListBackfills", pb.ListBackfillsRequest(dag_id="a\x00"), pb.ListBackfillsResponse),
    ]
    for method, request, response_class in grpc_cases:
        assert_grpc_safe(await call(channel, method, request, response_class), caplog)

    v1_body = {"dagId": THREE, "fromDate": FROM, "toDate": TO}
    v2_body = {"dag_id": "a\x00b", "from_date": FROM, "to_date": TO}
    responses = [
        await http.post("/v1/backfills", json={**v1_body, "dagId": "a\x00b"}),
        await http.post(
            "/v1/backfills", params={"validateOnly": "true"}, json={**v1_body, "dagId": "a\x00b"}
        ),
        await http.post("/v1/backfills", params={"requestId": "r\x00"}, json=v1_body),
        await http.get("/v1/backfills", params={"dagId": "a\x00"}),
        await http.post("/api/v2/backfills", json=v2_body),
        await http.post("/api/v2/backfills/dry_run", json=v2_body),
        await http.get("/api/v2/backfills", params={"dag_id": "a\x00"}),
    ]
    for response in responses:
        assert_http_safe(response, caplog)


async def test_page_token_outside_the_id_range(
    channel: grpc.aio.Channel, http: httpx.AsyncClient, server: SidecarServer
) -> None:
    for number in (2**31, 2**63, -1, 10**40):
        token = token_of(f"v1:{number}")
        for method, request, response_class in [
            ("ListBackfills", pb.ListBackfillsRequest(page_token=token), pb.ListBackfillsResponse),
            (
                "ListBackfillRuns",
                pb.ListBackfillRunsRequest(parent="backfills/1", page_token=token),
                pb.ListBackfillRunsResponse,
            ),
        ]:
            error = await call(channel, method, request, response_class)
            assert isinstance(error, grpc.aio.AioRpcError), (method, number)
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert field_violations(error) == ["page_token"]
        for path in ("/v1/backfills", "/v1/backfills/1/runs"):
            response = await http.get(path, params={"pageToken": token})
            assert response.status_code == 400, response.text
            assert_clean(response.text)
    # The largest id is still a token this server could have issued (tokens are sealed:
    # minted here with the server's own codec, for this listing and no principal).
    assert server.engine is not None
    tokens = await server.engine.page_tokens()
    largest = tokens.issue(2**31 - 1, PageTokens.context("backfills", "", "", 0))
    fine = await call(
        channel, "ListBackfills", pb.ListBackfillsRequest(page_token=largest), pb.ListBackfillsResponse
    )
    assert isinstance(fine, pb.ListBackfillsResponse)


@pytest.mark.parametrize("conf", ['{"a": NaN}', '{"a": Infinity}', '{"a": [-Infinity]}', '{"a": 1e400}'])
async def test_non_finite_numbers_in_conf(
    conf: str, channel: grpc.aio.Channel, http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    for validate_only in (True, False):
        error = await call(
            channel,
            "CreateBackfill",
            create_request(conf=conf, validate_only=validate_only),
            pb.CreateBackfillResponse,
        )
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert field_violations(error) == ["backfill.dag_run_conf"]
        assert_clean(error.details() or "")
    v1 = await http.post(
        "/v1/backfills", json={"dagId": THREE, "fromDate": FROM, "toDate": TO, "dagRunConf": conf}
    )
    assert v1.status_code == 400, v1.text
    assert_clean(v1.text)
    raw = f'{{"dag_id": "{THREE}", "from_date": "{FROM}", "to_date": "{TO}", "dag_run_conf": {conf}}}'
    v2 = await http.post("/api/v2/backfills", content=raw, headers={"content-type": "application/json"})
    assert v2.status_code == 422, v2.text
    assert_clean(v2.text)
    assert count_backfills(sql) == 0


async def test_conf_nesting_limit(
    channel: grpc.aio.Channel, http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    deepest = json.dumps({"a": nested(MAX_CONF_DEPTH - 1)})
    accepted = await call(
        channel, "CreateBackfill", create_request(conf=deepest, validate_only=True), pb.CreateBackfillResponse
    )
    assert isinstance(accepted, pb.CreateBackfillResponse), accepted
    for depth in (MAX_CONF_DEPTH + 1, 500):
        conf = json.dumps({"a": nested(depth - 1)})
        error = await call(channel, "CreateBackfill", create_request(conf=conf), pb.CreateBackfillResponse)
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert field_violations(error) == ["backfill.dag_run_conf"]
        assert f"deeper than {MAX_CONF_DEPTH}" in (error.details() or "")
        v1 = await http.post(
            "/v1/backfills", json={"dagId": THREE, "fromDate": FROM, "toDate": TO, "dagRunConf": conf}
        )
        assert v1.status_code == 400, v1.text
        v2 = await http.post(
            "/api/v2/backfills",
            json={"dag_id": THREE, "from_date": FROM, "to_date": TO, "dag_run_conf": json.loads(conf)},
        )
        assert v2.status_code == 422, v2.text
        assert_clean(v1.text + v2.text)
    # Deeper than the JSON parser itself can go: still a refusal, not a crash.
    abyss = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    error = await call(channel, "CreateBackfill", create_request(conf=abyss), pb.CreateBackfillResponse)
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert count_backfills(sql) == 0


async def test_malformed_protobuf_bytes(channel: grpc.aio.Channel) -> None:
    methods = [SERVICE + m for m in pb.DESCRIPTOR.services_by_name["BackfillService"].methods_by_name]
    methods.append(TICK)
    for method in methods:
        # An invalid tag, a truncated field; for GetBackfill also bad UTF-8 in its string ``name``.
        garbages = [b"\xff\xff\xff", b"\x0a\x05ab"]
        if method.endswith("/GetBackfill"):
            garbages.append(b"\x0a\x02\xc3\x28")
        for garbage in garbages:
            if method.endswith("WatchBackfill"):
                stream = channel.unary_stream(method, request_serializer=bytes, response_deserializer=bytes)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async for _ in stream(garbage, timeout=30):
                        pass
                error = raised.value
            else:
                unary = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await unary(garbage, timeout=30)
                error = raised.value
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
            assert_clean(error.details() or "")
            assert "request message" in (error.details() or "")


@pytest.fixture
def hidden_backfill_table(sql: psycopg2.extensions.cursor) -> Iterator[None]:
    """Airflow's ``backfill`` table renamed away: every call then fails in SQL the server did not foresee."""
    sql.execute("ALTER TABLE backfill RENAME TO backfill_hidden_by_test")
    try:
        yield
    finally:
        sql.execute("ALTER TABLE backfill_hidden_by_test RENAME TO backfill")


async def test_untranslated_failures_on_every_method(
    channel: grpc.aio.Channel,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    created = await call(channel, "CreateBackfill", create_request(), pb.CreateBackfillResponse)
    assert isinstance(created, pb.CreateBackfillResponse), created
    name = created.backfill.name
    request.getfixturevalue("hidden_backfill_table")

    unary_calls: list[_Call] = [
        ("CreateBackfill", create_request(), pb.CreateBackfillResponse),
        ("CreateBackfill", create_request(validate_only=True), pb.CreateBackfillResponse),
        ("GetBackfill", pb.GetBackfillRequest(name=name), pb.GetBackfillResponse),
        ("ListBackfills", pb.ListBackfillsRequest(), pb.ListBackfillsResponse),
        ("PauseBackfill", pb.PauseBackfillRequest(name=name), pb.PauseBackfillResponse),
        ("UnpauseBackfill", pb.UnpauseBackfillRequest(name=name), pb.UnpauseBackfillResponse),
        ("CancelBackfill", pb.CancelBackfillRequest(name=name), pb.CancelBackfillResponse),
        ("ListBackfillRuns", pb.ListBackfillRunsRequest(parent=name), pb.ListBackfillRunsResponse),
        (TICK, scheduler_pb2.TickRequest(scheduler_id="s"), scheduler_pb2.TickResponse),
    ]
    internal = 0
    for method, message, response_class in unary_calls:
        outcome = await call(channel, method, message, response_class)
        assert_grpc_safe(outcome, caplog)
        internal += isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() is grpc.StatusCode.INTERNAL
    assert internal >= len(unary_calls) - 2  # a dry run or a tick need not read the table

    watch = channel.unary_stream(
        SERVICE + "WatchBackfill",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.WatchBackfillResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in watch(pb.WatchBackfillRequest(name=name), timeout=30):
            pass
    record = assert_internal(raised.value, caplog)
    assert record.exc_info is not None and "backfill" in str(
        record.exc_info[1]
    )  # the details stay in the log

    backfill_id = name.split("/")[1]
    body = {"dagId": THREE, "fromDate": FROM, "toDate": TO}
    v2_body = {"dag_id": THREE, "from_date": FROM, "to_date": TO}
    responses = [
        await http.post("/v1/backfills", json=body),
        await http.get(f"/v1/{name}"),
        await http.get("/v1/backfills"),
        await http.post(f"/v1/{name}:pause"),
        await http.post(f"/v1/{name}:cancel", json={}),
        await http.get(f"/v1/{name}/runs"),
        await http.get(f"/v1/{name}:watch"),
        await http.post("/api/v2/backfills", json=v2_body),
        await http.get(f"/api/v2/backfills/{backfill_id}"),
        await http.get("/api/v2/backfills", params={"dag_id": THREE}),
        await http.put(f"/api/v2/backfills/{backfill_id}/pause"),
        await http.put(f"/api/v2/backfills/{backfill_id}/cancel"),
    ]
    for response in responses:
        assert response.status_code == 500, response.text
        assert_http_safe(response, caplog)


class _Exploding(grpc.aio.ServerInterceptor):
    """An interceptor that fails inside the call, as a broken auth check would (or before it)."""

    def __init__(self, *, early: bool = False) -> None:
        self._early = early

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        if self._early:
            raise RuntimeError("UPDATE airflow_sidecar.sidecar_backfill SET x = $1")
        handler = await continuation(handler_call_details)

        async def unary(request: Any, context: Any) -> Any:
            raise RuntimeError("SELECT secret FROM airflow_sidecar.sidecar_backfill WHERE id = $1")

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            raise RuntimeError("INSERT INTO airflow_sidecar.sidecar_backfill VALUES ($1)")
            yield  # pragma: no cover

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer
        )


@pytest.mark.parametrize("early", [False, True], ids=["in-call", "in-intercept-service"])
async def test_interceptor_failures_are_internal(
    early: bool, engine: BackfillEngine, caplog: pytest.LogCaptureFixture
) -> None:
    server = grpc.aio.server(interceptors=[ErrorBoundary(), _Exploding(early=early)])
    backfill_pb2_grpc.add_BackfillServiceServicer_to_server(BackfillServicer(engine), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            error = await call(
                channel, "GetBackfill", pb.GetBackfillRequest(name="backfills/1"), pb.GetBackfillResponse
            )
            assert isinstance(error, grpc.aio.AioRpcError)
            record = assert_internal(error, caplog)
            assert record.exc_info is not None
            assert "airflow_sidecar.sidecar_backfill" in str(record.exc_info[1])
            watch = channel.unary_stream(
                SERVICE + "WatchBackfill",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.WatchBackfillResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in watch(pb.WatchBackfillRequest(name="backfills/1"), timeout=30):
                    pass
            assert_internal(raised.value, caplog)
    finally:
        await server.stop(None)


class _LeakyBackend(backfill_pb2_grpc.BackfillServiceServicer):
    """A backend that fails the way an unguarded server does: grpc's ``Unexpected ...`` text."""

    async def GetBackfill(self, request: pb.GetBackfillRequest, context: Any) -> pb.GetBackfillResponse:
        if request.name == "backfills/7":  # a well-formed answer the gateway cannot render
            return pb.GetBackfillResponse(backfill=pb.Backfill(id=7, dag_id=THREE, dag_run_conf="{not json"))
        raise RuntimeError('INSERT INTO airflow_sidecar.sidecar_backfill VALUES ($1)\nTraceback File "x"')

    async def ListBackfills(self, request: pb.ListBackfillsRequest, context: Any) -> pb.ListBackfillsResponse:
        await context.abort(grpc.StatusCode.INTERNAL, "SELECT * FROM airflow_sidecar.sidecar_backfill")
        raise AssertionError("unreachable")

    async def CreateBackfill(
        self, request: pb.CreateBackfillRequest, context: Any
    ) -> pb.CreateBackfillResponse:
        await context.abort(grpc.StatusCode.DATA_LOSS, "asyncpg.exceptions.DataError: SELECT 1")
        raise AssertionError("unreachable")


async def test_gateway_never_copies_backend_failures(caplog: pytest.LogCaptureFixture) -> None:
    backend = grpc.aio.server()
    backfill_pb2_grpc.add_BackfillServiceServicer_to_server(_LeakyBackend(), backend)
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    app = create_app(GatewayConfig(target=f"127.0.0.1:{port}"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            body = {"dagId": THREE, "fromDate": FROM, "toDate": TO}
            v2_body = {"dag_id": THREE, "from_date": FROM, "to_date": TO}
            responses = [
                await http.get("/v1/backfills/1"),
                await http.get("/v1/backfills"),
                await http.post("/v1/backfills", json=body),
                await http.get("/api/v2/backfills/1"),
                await http.get("/api/v2/backfills", params={"dag_id": THREE}),
                await http.post("/api/v2/backfills", json=v2_body),
                await http.get("/api/v2/backfills/7"),  # the gateway's own failure
            ]
            for response in responses:
                assert response.status_code == 500, response.text
                assert_http_safe(response, caplog)
            # The sidecar's text is kept in the gateway's log, under the id the caller got.
            assert any("INSERT INTO" in r.getMessage() for r in caplog.records)
    finally:
        await app.upstream.close()
        await backend.stop(None)


async def test_gateway_hides_channel_failures(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(GatewayConfig(target="127.0.0.1:9"))  # discard: nothing listens
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            v1 = await http.get("/v1/backfills/1")
            v2 = await http.get("/api/v2/backfills/1")
    finally:
        await app.upstream.close()
    assert (v1.status_code, v2.status_code) == (503, 503), (v1.text, v2.text)
    assert v1.json()["error"]["message"] == "the sidecar is unavailable; retry"
    assert v2.json() == {"detail": "the sidecar is unavailable; retry"}
    for response in (v1, v2):
        assert "127.0.0.1" not in response.text and ":9" not in response.text
