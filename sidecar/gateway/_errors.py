"""gRPC statuses as HTTP answers: AIP-193 error bodies, and the rich details they carry.

The HTTP code of each gRPC code follows the mapping documented in ``google/rpc/code.proto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from sidecar.errors import DOMAIN

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


@dataclass
class CallError:
    """A failed call, decoded once for both error styles (AIP-193 and Airflow's)."""

    code: grpc.StatusCode
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    """The ``google.rpc.Status`` details in proto3 JSON (each with ``@type``)."""
    reason: str = ""
    """The ErrorInfo reason, when there is one."""

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


def from_rpc_error(error: grpc.RpcError) -> CallError:
    """Decode a failed call: its code, message and ``google.rpc.Status`` details."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message: str = (error.details() if hasattr(error, "details") else "") or code.name
    metadata: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    details: list[dict[str, Any]] = []
    reason = ""
    for key, value in metadata or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        if status.code != getattr(code_pb2, code.name, -1):
            break
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = reason or info.reason
            try:
                details.append(json_format.MessageToDict(detail))
            except (TypeError, KeyError, json_format.Error):
                details.append({"@type": detail.type_url})
    return CallError(code, message, details, reason)
