"""The calling side: a channel that presents a bearer token and, optionally, TLS credentials.

Used by the CLI and by the scheduler shim, so both reach the sidecar the same way. A leaf
beside :mod:`sidecar.config`: importing it loads ``grpc`` and nothing of the server.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from sidecar.config import ClientSecurity
from sidecar.names import AUTHORIZATION_METADATA


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call (plaintext or TLS alike)."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION_METADATA, f"Bearer {token}")

    def _details(self, details: Any) -> _ClientCallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def open_channel(
    target: str, security: ClientSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A synchronous channel to ``target`` that authenticates as ``security`` says.

    Raises:
        ValueError: a TLS file cannot be read.
    """
    if security.uses_tls:
        channel = grpc.secure_channel(target, security.channel_credentials(), options=list(options))
    else:
        channel = grpc.insecure_channel(target, options=list(options))
    if security.token:
        return grpc.intercept_channel(channel, _BearerToken(security.token))
    return channel
