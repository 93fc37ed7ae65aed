"""gRPC statuses as HTTP answers: AIP-193 error bodies, and the rich details they carry.

The HTTP code of each gRPC code follows the mapping documented in ``google/rpc/code.proto``.
A server-side failure (a 5xx answer) never carries text the gateway did not write itself: an
``INTERNAL``/``UNKNOWN`` answer of the sidecar is reduced to its correlation id (the sidecar's
log holds the details under it), and a failure of the channel or of the gateway itself is
logged here under a new correlation id, so no address, exception text or SQL reaches a caller.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from sidecar.errors import DOMAIN
from sidecar.observability import CORRELATION_KEY, log_failure

#: ``google.rpc.Code`` -> HTTP status, as ``google/rpc/code.proto`` documents it.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: Failures that are the server's, not the caller's: their text is never passed on.
_SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})
#: What a 5xx answer says when its text did not come from the sidecar itself.
_GENERIC = {
    grpc.StatusCode.UNAVAILABLE: "the sidecar is unavailable; retry",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the sidecar did not answer in time",
    grpc.StatusCode.UNIMPLEMENTED: "the sidecar does not implement this call",
}

log = logging.getLogger(__name__)


@dataclass
class CallError:
    """A failed call, decoded once for both error styles (AIP-193 and Airflow's)."""

    code: grpc.StatusCode
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    """The ``google.rpc.Status`` details in proto3 JSON (each with ``@type``)."""
    reason: str = ""
    """The ErrorInfo reason, when there is one."""
    correlation_id: str = ""
    """For a server-side failure: the id under which a log line holds the details."""

    @property
    def http_status(self) -> int:
        """The HTTP status of the gRPC code."""
        return HTTP_STATUS.get(self.code, 500)

    def body(self) -> dict[str, Any]:
        """The AIP-193 error body."""
        return error_body(self.http_status, self.code.name, self.message, self.details)


def error_body(
    http_status: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"error": {"code", "message", "status", "details"}}`` (AIP-193)."""
    return {"error": {"code": http_status, "message": message, "status": status, "details": details or []}}


def bad_request(message: str, field_path: str = "") -> CallError:
    """An INVALID_ARGUMENT raised by the gateway itself, with a BadRequest violation when a field is known."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "INVALID_ARGUMENT",
            "domain": DOMAIN,
        }
    ]
    if field_path:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_path, "description": message}],
            }
        )
    return CallError(grpc.StatusCode.INVALID_ARGUMENT, message, details, "INVALID_ARGUMENT")


def internal_error(correlation_id: str) -> CallError:
    """INTERNAL with nothing but the correlation id of the log line holding the details."""
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "INTERNAL",
        "domain": DOMAIN,
        "metadata": {CORRELATION_KEY: correlation_id},
    }
    message = f"internal error (correlation id {correlation_id}); the server's log holds the details"
    return CallError(grpc.StatusCode.INTERNAL, message, [info], "INTERNAL", correlation_id)


def unexpected(exc: BaseException, where: str) -> CallError:
    """A failure of the gateway itself: logged in full under a new correlation id, answered with only the id."""
    return internal_error(log_failure(log, exc, where))


def from_rpc_error(error: grpc.RpcError) -> CallError:
    """Decode a failed call: its code, message and ``google.rpc.Status`` details.

    A server-side failure keeps only its correlation id (a new one, logged here with the text
    the gateway received, when the sidecar gave none); another 5xx whose text does not come
    from the sidecar (a channel failure: it names addresses) gets a generic message.
    """
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message: str = (error.details() if hasattr(error, "details") else "") or code.name
    metadata: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    details: list[dict[str, Any]] = []
    reason = ""
    correlation_id = ""
    for key, value in metadata or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            break
        if status.code != getattr(code_pb2, code.name, -1):
            break
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = reason or info.reason
                correlation_id = correlation_id or info.metadata.get(CORRELATION_KEY, "")
            try:
                details.append(json_format.MessageToDict(detail))
            except (TypeError, KeyError, json_format.Error):
                details.append({"@type": detail.type_url})
    if code in _SERVER_FAULTS:
        if not (correlation_id.isascii() and correlation_id.isalnum() and len(correlation_id) <= 64):
            correlation_id = secrets.token_hex(8)
            log.error(
                "the sidecar answered %s (correlation id %s): %r",
                code.name,
                correlation_id,
                message[:2000],
                extra={CORRELATION_KEY: correlation_id},
            )
        return internal_error(correlation_id)
    if code in _GENERIC and not reason:
        log.warning("the sidecar call failed with %s: %r", code.name, message[:2000])
        message = _GENERIC[code]
    return CallError(code, message, details, reason)
