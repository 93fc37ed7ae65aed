"""The one table from the sidecar's exceptions to gRPC status codes, with ``google.rpc`` details."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar import errors
from sidecar.errors import DOMAIN
from sidecar.store import error_for

log = logging.getLogger(__name__)

#: By type, most specific first: the first match wins.
_CODES: list[tuple[type[errors.SidecarError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_code_for(error: errors.SidecarError) -> grpc.StatusCode:
    """The gRPC code of a sidecar error."""
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.SidecarError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with ErrorInfo and, for a bad field, a BadRequest violation."""
    code = status_code_for(error)
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
    details.append(info)
    if error.field and isinstance(error, errors.InvalidArgument):
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
                ]
            )
        )
        details.append(bad)
    if isinstance(error, errors.ResourceExhausted):
        retry = any_pb2.Any()
        retry_info = error_details_pb2.RetryInfo()
        retry_info.retry_delay.FromMilliseconds(int(error.retry_after * 1000))
        retry.Pack(retry_info)
        details.append(retry)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: errors.SidecarError) -> None:
    """Abort the call with the rich status of ``error``."""
    await context.abort_with_status(rpc_status.to_status(to_status(error)))


def _translate(exc: Exception) -> errors.SidecarError | None:
    if isinstance(exc, errors.SidecarError):
        return exc
    # A database failure, by its SQLSTATE class (never its message): transient ones
    # become UNAVAILABLE or ABORTED, the others stay unexpected.
    return error_for(exc)


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def unary(
    method: Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Map the exceptions of a unary servicer method to statuses."""

    @wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await method(self, request, context)
        except Exception as exc:
            error = _translate(exc)
            if error is None:
                raise
            await abort_with(context, error)
            raise AssertionError("unreachable") from exc

    return wrapper


def streaming(
    method: Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]:
    """Map the exceptions of a server-streaming servicer method to statuses."""

    @wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as exc:
            error = _translate(exc)
            if error is None:
                raise
            await abort_with(context, error)

    return wrapper
