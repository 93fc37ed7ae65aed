"""The one table from the sidecar's exceptions to gRPC status codes, with ``google.rpc`` details.

Anything else a call raises is a fault of the server, not of the caller: it is logged in full
(type, text, traceback) under a fresh correlation id, and the caller gets ``INTERNAL`` with only
that id (in the message, in the ErrorInfo metadata and in the ``correlation-id`` trailing
metadata), never the exception's text, which for a database error holds SQL, parameters and
schema names. :class:`ErrorBoundary`, the outermost interceptor, does the same for failures
outside the servicers (interceptors) and answers undecodable request bytes with
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar import errors
from sidecar.errors import DOMAIN
from sidecar.observability import CORRELATION_KEY, log_failure
from sidecar.store import error_for

log = logging.getLogger(__name__)

#: ErrorInfo reason of an unexpected failure (its metadata holds :data:`CORRELATION_KEY`).
INTERNAL_REASON = "INTERNAL"
#: Trailing metadata key carrying the correlation id of an INTERNAL answer.
CORRELATION_METADATA = "correlation-id"

#: By type, most specific first: the first match wins.
_CODES: list[tuple[type[errors.SidecarError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
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


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def internal_status(exc: BaseException, where: str) -> grpc.Status:
    """Log an unexpected failure in full under a new correlation id; answer only that id.

    Args:
        exc: the exception nothing translated.
        where: the RPC method it escaped from (for the log line).

    Returns:
        ``INTERNAL`` with the id in its message, ErrorInfo metadata and trailing metadata.
    """
    correlation_id = log_failure(log, exc, where)
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=INTERNAL_REASON, domain=DOMAIN, metadata={CORRELATION_KEY: correlation_id}
        )
    )
    message = f"internal error (correlation id {correlation_id}); the sidecar's log holds the details"
    status = rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[info]))
    return _Status(
        status.code, status.details, (*status.trailing_metadata, (CORRELATION_METADATA, correlation_id))
    )


async def _abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: Exception, where: str) -> None:
    """Abort with the status of a sidecar error, or INTERNAL (logged) for anything else."""
    error = _translate(exc)
    if error is None:
        await context.abort_with_status(internal_status(exc, where))
    else:
        await abort_with(context, error)


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def unary(
    method: Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Map the exceptions of a unary servicer method to statuses (unexpected ones: INTERNAL)."""

    @wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(context, exc, method.__qualname__)
            raise AssertionError("unreachable") from exc

    return wrapper


def streaming(
    method: Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]:
    """Map the exceptions of a server-streaming servicer method to statuses (unexpected ones: INTERNAL)."""

    @wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(context, exc, method.__qualname__)

    return wrapper


class _Undecodable:
    """What a request deserializer hands on for bytes that are not the request message."""


_UNDECODABLE = _Undecodable()


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, answering :data:`_UNDECODABLE` instead of raising (grpc would leak the error)."""
    if deserializer is None:
        return None
    parse = deserializer

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:
            return _UNDECODABLE

    return lenient


def _malformed(method: str) -> grpc.Status:
    name = method.rsplit("/", 1)[-1][:100]
    error = errors.InvalidArgument(f"the request bytes are not a valid {name} request message")
    status: grpc.Status = rpc_status.to_status(to_status(error))
    return status


@contextlib.asynccontextmanager
async def _answering(
    request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[None]:
    """Refuse undecodable bytes before the block; answer INTERNAL for whatever escapes it."""
    if request is _UNDECODABLE:
        await context.abort_with_status(_malformed(method))
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        await context.abort_with_status(internal_status(exc, method))


def _aborting(status: grpc.Status) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that answers ``status`` (unary; the request bytes are left undecoded)."""

    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort_with_status(status)

    return grpc.unary_unary_rpc_method_handler(abort)


class ErrorBoundary(grpc.aio.ServerInterceptor):
    """The outermost interceptor: no exception text and no decoding error reaches a caller.

    Undecodable request bytes get ``INVALID_ARGUMENT`` (grpc would answer ``UNKNOWN`` with the
    parser's message); an exception raised by an inner interceptor gets ``INTERNAL`` with a
    correlation id, logged like a servicer's (:func:`internal_status`).
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap unary and server-streaming handlers; stream-request ones pass unchanged."""
        method = str(handler_call_details.method)
        try:
            handler = await continuation(handler_call_details)
        except Exception as exc:  # an inner interceptor failed before the call: answer it anyway
            return _aborting(internal_status(exc, method))
        if handler is None:
            return None
        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async with _answering(request, context, method):
                    result = inner_unary(request, context)
                    return await result if inspect.isawaitable(result) else result

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, _lenient(handler.request_deserializer), handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async with _answering(request, context, method):
                    async for item in inner_stream(request, context):  # as the metrics interceptor
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, _lenient(handler.request_deserializer), handler.response_serializer
            )
        return handler
