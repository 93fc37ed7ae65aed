"""The gateway as one ASGI application: body limits, JSON decoding, routing, the OpenAPI document.

A request body must be ``application/json`` (415 otherwise), at most ``max_body_bytes`` (413)
and arrive within ``body_timeout`` seconds (408); each refusal is answered in the error format
of its route family (AIP-193 on ``/v1``, Airflow's ``{"detail": ...}`` on ``/api/v2``). Nothing
the gateway raises reaches a caller as text: an unexpected failure is logged under a
correlation id and answered 500 with only that id.
"""

from __future__ import annotations

import asyncio
import email.message
import json
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2
from sidecar.config import DEFAULT_TARGET
from sidecar.gateway import _airflow, _rest
from sidecar.gateway._bindings import bindings_of
from sidecar.gateway._calls import Upstream
from sidecar.gateway._errors import CallError, bad_request, error_body, unexpected
from sidecar.gateway._openapi import openapi_document
from sidecar.gateway._tracing import request_trace
from sidecar.vocabulary import counted

log = logging.getLogger(__name__)

OPENAPI_PATH = "/openapi.json"
#: The services whose HTTP bindings the gateway serves (every service of the public proto file).
SERVICES = tuple(backfill_pb2.DESCRIPTOR.services_by_name.values())
#: The gRPC methods the gateway routes (``/pkg.Service/Method``), built from those bindings.
GATEWAY_ROUTES: frozenset[str] = frozenset(b.grpc_path for b in bindings_of(SERVICES))


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway reaches the sidecar and what it accepts."""

    target: str = DEFAULT_TARGET
    """host:port of the sidecar's gRPC server."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body; larger ones get 413 before anything is called."""
    timeout: float = 60.0
    """Seconds per unary gRPC call."""
    body_timeout: float = 30.0
    """Seconds a client has to send the whole request body; slower ones get 408."""
    credentials: grpc.ChannelCredentials | None = None
    """TLS credentials for the sidecar's port; None: plaintext (loopback)."""
    tracer_provider: Any | None = None
    """An OpenTelemetry tracer provider: a span per request; None passes trace headers through."""


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class _BadJson(Exception):
    def __init__(self, error: json.JSONDecodeError) -> None:
        super().__init__(error.msg)
        self.error = error


class Gateway:
    """The ASGI app: ``/v1/...`` from the HTTP bindings, ``/api/v2/backfills...``, ``/openapi.json``."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self.upstream = Upstream(
            self.config.target, timeout=self.config.timeout, credentials=self.config.credentials
        )
        self.bindings = bindings_of(SERVICES)
        self.openapi = openapi_document(self.bindings)
        self._airflow = _airflow.AirflowRoutes(self.upstream)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        with request_trace(scope, self.config.tracer_provider):
            request = Request(scope, receive)
            try:
                response = await self._answer(request)
            except Exception as exc:
                response = _internal_response(
                    unexpected(exc, f"{request.method} request"), _is_airflow(scope)
                )
            await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, request: Request) -> Response:
        path = _path_of(request.scope)
        airflow = _is_airflow(request.scope)
        if path == OPENAPI_PATH and request.method == "GET":
            return JSONResponse(self.openapi)
        try:
            raw = await self._read_body(request)
        except _TooLarge:
            message = f"request body larger than {counted(self.config.max_body_bytes, 'byte')}"
            return _refusal(413, "INVALID_ARGUMENT", message, airflow)
        except _TooSlow:
            message = (
                f"request body not received within {counted(self.config.body_timeout, 'second', spec='g')}"
            )
            return _refusal(408, "DEADLINE_EXCEEDED", message, airflow)
        except ClientDisconnect:
            return Response(status_code=400)
        if raw.strip() and not _is_json(request.headers.get("content-type")):
            message = "request bodies must be JSON: send Content-Type: application/json"
            return _refusal(415, "INVALID_ARGUMENT", message, airflow, close=False)
        try:
            body = _decode(raw)
        except _BadJson as exc:
            if airflow:
                return _airflow_json_error(exc.error)
            return _rest.error_response(
                bad_request(f"malformed JSON body: {exc.error.msg} at {exc.error.pos}")
            )
        if airflow:
            return await self._airflow.dispatch(request, path, body, bool(raw.strip()))
        found = _rest.match(self.bindings, request.method, path)
        if found is None:
            return JSONResponse(error_body(404, "NOT_FOUND", f"no route for {path[:200]}"), status_code=404)
        if isinstance(found, str):
            return JSONResponse(
                error_body(405, "UNIMPLEMENTED", f"{request.method} is not allowed on {path[:200]}"),
                status_code=405,
            )
        binding, values = found
        return await _rest.handle(self.upstream, binding, values, request, body)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _TooLarge
                    chunks.append(chunk)
        except TimeoutError:
            raise _TooSlow from None
        return b"".join(chunks)


def _path_of(scope: Scope) -> str:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw_path.decode("latin-1").split("?", 1)[0]


def _is_airflow(scope: Scope) -> bool:
    path = _path_of(scope)
    return path == _airflow.PREFIX or path.startswith(_airflow.PREFIX + "/")


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any parameters."""
    if not content_type:
        return False
    header = email.message.Message()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _refusal(status: int, code: str, message: str, airflow: bool, *, close: bool = True) -> JSONResponse:
    """A refusal of the body, in the route family's format.

    ``close``: the body was not read in full, so the connection cannot carry another request.
    """
    body = {"detail": message} if airflow else error_body(status, code, message)
    return JSONResponse(body, status_code=status, headers={"connection": "close"} if close else None)


def _internal_response(error: CallError, airflow: bool) -> JSONResponse:
    if airflow:
        return _airflow.internal_server_error(error.correlation_id).response()
    return _rest.error_response(error)


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _BadJson(exc) from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise _BadJson(json.JSONDecodeError(str(exc)[:200], "", 0)) from None


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), and PostgreSQL's json types refuse them."""
    raise ValueError(f"{name} is not valid JSON")


def _airflow_json_error(error: json.JSONDecodeError) -> JSONResponse:
    """FastAPI's 422 for a body that is not JSON."""
    detail = [
        {
            "type": "json_invalid",
            "loc": ["body", error.pos],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": error.msg},
        }
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(config: GatewayConfig | None = None) -> Gateway:
    """The gateway ASGI application."""
    return Gateway(config)
