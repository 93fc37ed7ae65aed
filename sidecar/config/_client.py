"""How a client reaches the sidecar: its address, bearer token, TLS files and call timeout.

One set of connection options serves the CLI's ``backfill`` commands, the REST gateway and
the scheduler shim, so all three are configured the same way: a flag, else ``SIDECAR_TARGET``,
a token from ``--token``/``SIDECAR_TOKEN`` or a file (``--token-file``/``SIDECAR_TOKEN_FILE``),
and TLS from a CA bundle (``SIDECAR_TLS_CA``) plus, for mutual TLS, a client certificate and
key (``SIDECAR_TLS_CLIENT_CERT``, ``SIDECAR_TLS_CLIENT_KEY``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import grpc

from sidecar.config import _env
from sidecar.config._env import Environ

#: Where the sidecar listens unless told otherwise, and where every client looks for it.
DEFAULT_TARGET = "127.0.0.1:50051"


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
    def from_env(cls, environ: Environ | None = None, *, token: bool = True) -> ClientSecurity:
        """Settings from ``SIDECAR_TOKEN`` / ``SIDECAR_TOKEN_FILE`` and ``SIDECAR_TLS_*``.

        Args:
            environ: the variables (default: the process environment).
            token: read the token variables too (the gateway forwards its callers' tokens).

        Raises:
            ValueError: the token file cannot be read.
        """
        env = _env.environment(environ)
        value = _env.text(env, "SIDECAR_TOKEN") if token else None
        token_file = _env.path(env, "SIDECAR_TOKEN_FILE") if token else None
        if value is None and token_file is not None:
            value = read_token(token_file)
        return cls(
            token=value,
            tls=_env.enabled(env, "SIDECAR_TLS"),
            ca=_env.path(env, "SIDECAR_TLS_CA"),
            cert=_env.path(env, "SIDECAR_TLS_CLIENT_CERT"),
            key=_env.path(env, "SIDECAR_TLS_CLIENT_KEY"),
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


@dataclass(frozen=True)
class ClientSettings:
    """Where a client finds the sidecar, who it says it is, and how long it waits."""

    target: str = DEFAULT_TARGET
    """The sidecar's gRPC address (``host:port``, or a gRPC target such as ``dns:///...``)."""
    timeout: float = 600.0
    """Seconds per call (the CLI's default; the gateway uses 60)."""
    security: ClientSecurity = dataclasses.field(default_factory=ClientSecurity)
    """Bearer token and TLS files."""

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        environ: Environ | None = None,
        *,
        timeout: float = 600.0,
        token: bool = True,
    ) -> ClientSettings:
        """Settings from the options of :func:`add_connection_arguments`: flags first, then the environment.

        Args:
            args: the parsed command line.
            environ: the variables (default: the process environment).
            timeout: seconds per call when ``--timeout`` is not given.
            token: whether the command sends a token of its own (the gateway does not).

        Raises:
            ValueError: a token file cannot be read.
        """
        env = dict(_env.environment(environ))
        flag_token: str | None = getattr(args, "token", None)
        if flag_token is None and getattr(args, "client_token_file", None):
            flag_token = read_token(Path(args.client_token_file))
        if flag_token is not None:  # a flag wins: do not even read a token file named in the environment
            env.pop("SIDECAR_TOKEN_FILE", None)
        base = ClientSecurity.from_env(env, token=token)

        def flag_path(name: str) -> Path | None:
            value = getattr(args, name, None)
            return Path(value) if value else None

        security = dataclasses.replace(
            base,
            token=flag_token or base.token,
            tls=bool(getattr(args, "tls", False)) or base.tls,
            ca=flag_path("tls_ca") or base.ca,
            cert=flag_path("tls_client_cert") or base.cert,
            key=flag_path("tls_client_key") or base.key,
        )
        return cls(
            target=getattr(args, "target", None) or _env.text(env, "SIDECAR_TARGET", DEFAULT_TARGET) or "",
            timeout=getattr(args, "timeout", None) or timeout,
            security=security,
        )


def seconds(value: str) -> float:
    """A ``--timeout``: a positive, finite number of seconds (argparse exits 2 on anything else)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive, finite number of seconds")
    return number


def add_connection_arguments(
    parser: argparse.ArgumentParser, *, timeout: float = 600.0, token: bool = True
) -> None:
    """The shared connection options (target, timeout, token, TLS) as one documented group.

    Every default is ``SUPPRESS``, so the options may stand before or after a subcommand (the
    parser may be a parent of several) and :meth:`ClientSettings.from_args` fills in the rest
    from the environment.

    Args:
        parser: the command (or parent parser) to add the group to.
        timeout: the default shown for ``--timeout``.
        token: whether to offer ``--token``/``--token-file`` (the gateway forwards its callers').
    """
    group = parser.add_argument_group(
        "connection to the sidecar",
        "Flags win over the environment; secrets are best passed by variable or file (flags show in ps).",
    )
    group.add_argument(
        "--target",
        default=argparse.SUPPRESS,
        help=f"the sidecar's gRPC address (default {DEFAULT_TARGET}); env SIDECAR_TARGET",
    )
    group.add_argument(
        "--timeout",
        type=seconds,
        default=argparse.SUPPRESS,
        help=f"seconds per call (default {timeout:g})",
    )
    if token:
        group.add_argument(
            "--token",
            default=argparse.SUPPRESS,
            help="bearer token (a JWT or a service token); env SIDECAR_TOKEN",
        )
        group.add_argument(
            "--token-file",
            dest="client_token_file",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="read the bearer token from this file; env SIDECAR_TOKEN_FILE",
        )
    group.add_argument(
        "--tls",
        action="store_true",
        default=argparse.SUPPRESS,
        help="use TLS (system roots); env SIDECAR_TLS=1",
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PEM CA bundle to verify the sidecar (implies TLS); env SIDECAR_TLS_CA",
    )
    group.add_argument(
        "--tls-cert",
        dest="tls_client_cert",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PEM client certificate for mutual TLS; env SIDECAR_TLS_CLIENT_CERT",
    )
    group.add_argument(
        "--tls-key",
        dest="tls_client_key",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PEM key of --tls-cert; env SIDECAR_TLS_CLIENT_KEY",
    )
