"""The calling side: a channel that presents a bearer token and, optionally, TLS credentials.

Used by the CLI and by the scheduler shim, so both are configured the same way: a token from
a flag, ``SIDECAR_TOKEN`` or a file (``SIDECAR_TOKEN_FILE``), and TLS from a CA bundle
(``SIDECAR_TLS_CA``) plus, for mutual TLS, a client certificate and key
(``SIDECAR_TLS_CLIENT_CERT``, ``SIDECAR_TLS_CLIENT_KEY``).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sidecar.auth._reasons import AUTHORIZATION_METADATA


@dataclass(frozen=True)
class ClientSecurity:
    """How a client authenticates itself and checks the server."""

    token: str | None = None
    """Bearer token sent with every call (a JWT or a static service-account token)."""
    tls: bool = False
    """Use TLS; with no ``ca``, the system's root certificates verify the server."""
    ca: Path | None = None
    """PEM CA bundle that the server's certificate must chain to (implies TLS)."""
    cert: Path | None = None
    """PEM client certificate for mutual TLS (implies TLS; needs ``key``)."""
    key: Path | None = None
    """PEM private key of ``cert``."""

    @property
    def uses_tls(self) -> bool:
        """Whether the channel is encrypted."""
        return self.tls or self.ca is not None or self.cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSecurity:
        """Settings from ``SIDECAR_TOKEN`` / ``SIDECAR_TOKEN_FILE`` and ``SIDECAR_TLS_*``.

        Raises:
            ValueError: the token file cannot be read.
        """
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        token = env.get("SIDECAR_TOKEN") or None
        token_file = path("SIDECAR_TOKEN_FILE")
        if token is None and token_file is not None:
            token = read_token(token_file)
        return cls(
            token=token,
            tls=env.get("SIDECAR_TLS", "").lower() in {"1", "true", "yes"},
            ca=path("SIDECAR_TLS_CA"),
            cert=path("SIDECAR_TLS_CLIENT_CERT"),
            key=path("SIDECAR_TLS_CLIENT_KEY"),
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials for a secure channel.

        Raises:
            ValueError: a certificate file cannot be read, or a certificate without a key.
        """
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both --tls-cert and --tls-key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca) if self.ca else None,
            private_key=_read(self.key) if self.key else None,
            certificate_chain=_read(self.cert) if self.cert else None,
        )


def read_token(path: Path) -> str:
    """The token in a file (surrounding whitespace stripped).

    Raises:
        ValueError: unreadable or empty.
    """
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from exc


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
