"""How ``airflow-sidecar gateway`` runs: its HTTP listen address and limits, and how it reaches the sidecar."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from sidecar.config import _env
from sidecar.config._client import ClientSettings, add_connection_arguments
from sidecar.config._env import Environ
from sidecar.config._options import text_option

#: Where the gateway listens unless told otherwise (loopback: exposing it is a decision).
DEFAULT_GATEWAY_LISTEN = "127.0.0.1:8080"
#: The gateway's seconds per gRPC call (a REST caller waits less than the CLI's 600).
GATEWAY_TIMEOUT = 60.0


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's own options; callers' tokens are forwarded, so it has none of its own."""

    listen: str = DEFAULT_GATEWAY_LISTEN
    """host:port of the HTTP server."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body; larger ones get 413 before anything is called."""
    log_level: str = "INFO"
    """Level of the gateway's (and uvicorn's) log."""
    client: ClientSettings = dataclasses.field(
        default_factory=lambda: ClientSettings(timeout=GATEWAY_TIMEOUT)
    )
    """The sidecar's address, TLS files and the timeout per call."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Environ | None = None) -> GatewaySettings:
        """Settings from the options of :func:`add_gateway_arguments`.

        Raises:
            ValueError: a non-positive ``--max-body-bytes``.
        """
        if args.max_body_bytes < 1:
            raise ValueError("--max-body-bytes must be positive")
        return cls(
            listen=args.listen,
            max_body_bytes=args.max_body_bytes,
            log_level=args.log_level,
            client=ClientSettings.from_args(args, environ, timeout=GATEWAY_TIMEOUT, token=False),
        )


def add_gateway_arguments(gateway: argparse.ArgumentParser, environ: Environ | None = None) -> None:
    """Every option of ``gateway``: its own, then the shared connection group (without a token)."""
    env = _env.environment(environ)
    text_option(
        gateway,
        env,
        "--listen",
        "SIDECAR_GATEWAY_LISTEN",
        f"host:port to listen on (default {DEFAULT_GATEWAY_LISTEN})",
        default=DEFAULT_GATEWAY_LISTEN,
    )
    gateway.add_argument(
        "--max-body-bytes", type=int, default=1024 * 1024, help="largest request body (default 1 MiB)"
    )
    text_option(gateway, env, "--log-level", "SIDECAR_LOG_LEVEL", "default INFO", default="INFO")
    add_connection_arguments(gateway, timeout=GATEWAY_TIMEOUT, token=False)
