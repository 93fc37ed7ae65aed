"""The grpc.aio server interceptor that authenticates every call and gates it by method.

It wraps each method's handler rather than answering from ``intercept_service`` alone,
because a create is authorised on the DAG id its request names. The interceptor decides
only what the principal and the request decide: a create on its DAG, Tick on the
scheduler role, a listing filtered on one DAG and, for a call naming a backfill, whether
the caller holds the method's action on some DAG at all (a stranger is refused before
anything is read). It never looks a backfill up: it publishes the call's
:class:`~sidecar.auth.Access` (:func:`~sidecar.auth.current_access`) and the ledger
checks it on the row the call actually loads or changes, in the same transaction. The
caller (or, for a ``delegate``, the user it names: :mod:`sidecar.auth._delegation`) is also
published as the backfill's triggering user (:func:`current_principal`).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar.auth._access import Access, publish_access
from sidecar.auth._actions import AUTHENTICATED_PREFIXES, METHOD_RULES, PUBLIC_PREFIXES, Target
from sidecar.auth._delegation import DelegationRefused, delegated, on_behalf_of
from sidecar.auth._policy import Action, Policy
from sidecar.auth._reasons import AUTHORIZATION_METADATA, DOMAIN, PERMISSION_DENIED, TOKEN_INVALID
from sidecar.auth._revocation import RevocationCheck
from sidecar.auth._tokens import AuthenticationError, Authenticator, Principal

log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "airflow_sidecar_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC being served (None without authentication)."""
    return _principal.get()


def _status(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[info])
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


#: The database could not answer an authorisation question: retry (never allow by default).
_UNAVAILABLE = _status(
    grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "the metadata database is unreachable; retry"
)


def _field(message: Message, path: str) -> str:
    value: Any = message
    for part in path.split("."):
        value = getattr(value, part)
    return str(value)


class Denied(Exception):
    """A refused call, with the status to answer it with."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call by its bearer token and gates it by the policy.

    Args:
        authenticator: turns the ``authorization`` metadata into a principal.
        policy: who may do which action on which DAG.
        is_revoked: whether a JWT id was revoked by Airflow; None checks nothing.
    """

    def __init__(
        self, authenticator: Authenticator, policy: Policy, is_revoked: RevocationCheck | None = None
    ) -> None:
        self._authenticator = authenticator
        self._policy = policy
        self._is_revoked = is_revoked

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method's handler with the checks (health checks pass unchecked)."""
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == AUTHORIZATION_METADATA:
                authorization = value if isinstance(value, str) else value.decode()
        user = on_behalf_of(handler_call_details.invocation_metadata)
        return _wrap(handler, _Check(self, method, authorization, user))

    async def check(
        self, method: str, authorization: str | None, request: Message | None, on_behalf: bytes | None = None
    ) -> Principal:
        """The caller (or the user it delegates for), if it may make this call with this request.

        Decided from the principal and the request alone; a backfill a call names is
        authorised on the row the ledger loads (:meth:`Access.check`).

        Raises:
            Denied: unauthenticated, a refused delegation, or not allowed.
        """
        try:
            principal = self._authenticator.authenticate(authorization)
        except AuthenticationError as exc:
            log.info("unauthenticated call to %s: %s", method, exc.reason)
            raise Denied(_status(grpc.StatusCode.UNAUTHENTICATED, exc.reason, exc.message)) from exc
        try:
            principal = delegated(principal, on_behalf)
        except DelegationRefused as exc:
            raise Denied(_status(grpc.StatusCode.PERMISSION_DENIED, PERMISSION_DENIED, str(exc))) from exc
        if principal.jti is not None and self._is_revoked is not None:
            await self._check_revocation(principal.jti, method)
        if method.startswith(AUTHENTICATED_PREFIXES):
            return principal
        rule = METHOD_RULES.get(method)
        if rule is None:
            self._deny(principal, method, None, f"no authorisation rule for {method}")
        named = _field(request, rule.field) if rule.field and request is not None else ""
        if rule.target is Target.DAG_ID or (rule.target is Target.LISTING and named):
            if not self._policy.allows(principal, rule.action, named):
                what = f"{principal.name} may not {rule.action.value} backfills of DAG {named}"
                self._deny(principal, method, named, what)
        elif not self._policy.grants_any(principal, rule.action):
            # Tick, an unfiltered listing (the engine keeps only readable DAGs) or a call naming
            # a backfill (the ledger checks its row): without the action on any DAG, the caller
            # is refused before anything is read, whatever the backfill.
            self._deny(principal, method, None, f"{principal.name} may not {rule.action.value}")
        return principal

    def access(self, principal: Principal, method: str) -> Access:
        """What ``principal`` may do in a call of ``method``, for the ledger to check on its rows."""
        rule = METHOD_RULES.get(method)
        return Access(principal, self._policy, rule.action if rule is not None else Action.READ)

    async def _check_revocation(self, jti: str, method: str) -> None:
        try:
            revoked = await self._is_revoked(jti) if self._is_revoked else False
        except Exception as exc:  # fail closed: an unverifiable token is not accepted
            log.warning("cannot check token revocation for %s: %s", method, exc)
            raise Denied(_UNAVAILABLE) from exc
        if revoked:
            log.info("revoked token used for %s", method)
            raise Denied(_status(grpc.StatusCode.UNAUTHENTICATED, TOKEN_INVALID, "token has been revoked"))

    def _deny(self, principal: Principal, method: str, dag_id: str | None, message: str) -> NoReturn:
        log.info("denied %s to %s (dag %s)", method, principal.name, dag_id)
        raise Denied(_status(grpc.StatusCode.PERMISSION_DENIED, PERMISSION_DENIED, message))


class _Check:
    """One call's check: the interceptor, the method and its authorization metadata."""

    def __init__(
        self, interceptor: AuthInterceptor, method: str, authorization: str | None, on_behalf: bytes | None
    ) -> None:
        self.interceptor = interceptor
        self.method = method
        self.authorization = authorization
        self.on_behalf = on_behalf

    async def enter(self, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        try:
            principal = await self.interceptor.check(self.method, self.authorization, request, self.on_behalf)
        except Denied as denied:
            await context.abort_with_status(denied.status)
            raise AssertionError("unreachable") from denied
        _principal.set(principal)
        publish_access(self.interceptor.access(principal, self.method))
        return principal


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _items(value: Any) -> AsyncIterator[Any]:
    if hasattr(value, "__aiter__"):
        async for item in value:
            yield item
    elif inspect.isawaitable(value):
        await value  # a handler that writes with context.write
    else:
        for item in value:
            yield item


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], check: _Check) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, with ``check`` run before the servicer ."""
    # Each RPC runs in its own task, so the context variable set here is the call's own.
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await check.enter(request, context)
            return await _result(inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await check.enter(request, context)
            async for item in _items(inner_us(request, context)):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await check.enter(None, context)
            return await _result(inner_su(requests, context))

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await check.enter(None, context)
        async for item in _items(inner_ss(requests, context)):
            yield item

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )
