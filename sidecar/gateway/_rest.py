"""The ``google.api.http`` routes: HTTP request -> RPC request -> gRPC -> proto3 JSON.

Responses use the canonical proto3 JSON mapping (``lowerCamelCase`` names, int64 as strings,
Timestamps as RFC 3339, enums by name); requests accept both ``lowerCamelCase`` and the proto
field names. Errors are AIP-193 bodies. The server-streaming ``WatchBackfill`` is answered as
newline-delimited JSON (``application/x-ndjson``): one ``{"result": {...}}`` object per line,
and, should the stream fail after it started, a last ``{"error": {...}}`` line. A failure of the
gateway itself is answered 500 with a correlation id (``_errors.unexpected``), never its text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sidecar.gateway._bindings import Binding, RequestError, build_request
from sidecar.gateway._calls import Upstream
from sidecar.gateway._errors import CallError, bad_request, from_rpc_error, unexpected

NDJSON = "application/x-ndjson"


def to_json(message: Message) -> dict[str, Any]:
    """A message in proto3 JSON, with fields that have no presence printed at their defaults.

    But for an estimate whose plan is still being counted: its ``runsRemaining`` is not known,
    which is not 0, so it is left out as proto3 JSON allows for a field at its default
    (``Estimate.runs_remaining`` keeps its cardinality, for the clients generated from it).
    """
    document: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    _leave_out_unknown_runs(document)
    return document


def _leave_out_unknown_runs(node: Any) -> None:
    """Drop ``runsRemaining`` from every estimate in ``node`` that has ``planIsCounting`` true."""
    if isinstance(node, dict):
        if node.get("planIsCounting") is True:
            node.pop("runsRemaining", None)
        for value in node.values():
            _leave_out_unknown_runs(value)
    elif isinstance(node, list):
        for value in node:
            _leave_out_unknown_runs(value)


def error_response(error: CallError) -> JSONResponse:
    """The AIP-193 answer to a failed call."""
    return JSONResponse(error.body(), status_code=error.http_status)


def match(bindings: Sequence[Binding], method: str, path: str) -> tuple[Binding, dict[str, str]] | str | None:
    """The binding and path values for a request; the string ``"method"`` when only the method differs."""
    method_mismatch = False
    for binding in bindings:
        values = binding.template.match(path)
        if values is None:
            continue
        if binding.http_method != method:
            method_mismatch = True
            continue
        return binding, values
    return "method" if method_mismatch else None


async def handle(
    upstream: Upstream, binding: Binding, path_values: dict[str, str], request: Request, body: Any
) -> Response:
    """Answer one bound HTTP request."""
    try:
        message = build_request(binding, path_values, list(request.query_params.multi_items()), body)
    except RequestError as exc:
        return error_response(bad_request(exc.message, exc.field))
    authorization = request.headers.get("authorization")
    if binding.streaming:
        return await _stream(upstream, binding, message, authorization)
    try:
        result = await upstream.unary(binding.grpc_path, message, binding.response_class, authorization)
    except grpc.RpcError as exc:
        return error_response(from_rpc_error(exc))
    return JSONResponse(to_json(result))


async def _stream(
    upstream: Upstream, binding: Binding, message: Message, authorization: str | None
) -> Response:
    stream = upstream.stream(binding.grpc_path, message, binding.response_class, authorization)
    iterator = stream.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return Response(b"", media_type=NDJSON)
    except grpc.RpcError as exc:
        return error_response(from_rpc_error(exc))

    async def lines() -> AsyncIterator[bytes]:
        yield _line({"result": to_json(first)})
        try:
            async for item in iterator:
                yield _line({"result": to_json(item)})
        except grpc.RpcError as exc:
            yield _line(from_rpc_error(exc).body())
        except Exception as exc:  # the gateway's own failure, after the 200 went out
            yield _line(unexpected(exc, binding.grpc_path).body())
        finally:
            cancel = getattr(stream, "cancel", None)
            if cancel is not None:
                cancel()

    return StreamingResponse(lines(), media_type=NDJSON)


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"
