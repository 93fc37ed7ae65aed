"""``airflow-sidecar gateway``: serve the REST gateway with uvicorn."""

from __future__ import annotations

import argparse
import logging

from sidecar.auth import is_loopback
from sidecar.config import GatewaySettings, add_gateway_arguments
from sidecar.gateway._app import GatewayConfig, create_app
from sidecar.gateway._exposure import RequireAuthenticatedSidecar
from sidecar.observability import setup_tracing


def add_gateway_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``gateway`` subcommand."""
    gateway = commands.add_parser(
        "gateway",
        help="serve the REST gateway (HTTP/JSON) in front of the sidecar",
        description="Serve the REST gateway. Unless both --listen and --target are loopback, it "
        "forwards only to a sidecar that requires authentication (it answers 503 otherwise).",
    )
    add_gateway_arguments(gateway)


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) as a pair.

    Raises:
        ValueError: not of that form.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not host:
        raise ValueError(f"--listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def run_gateway(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and drains open requests)."""
    import uvicorn

    settings = GatewaySettings.from_args(args)
    host, port = split_listen(settings.listen)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    security = settings.client.security
    credentials = security.channel_credentials() if security.uses_tls else None
    gateway = create_app(
        GatewayConfig(
            target=settings.client.target,
            max_body_bytes=settings.max_body_bytes,
            timeout=settings.client.timeout,
            credentials=credentials,
            tracer_provider=setup_tracing(),
        )
    )
    exposed = not (is_loopback(settings.listen) and is_loopback(settings.client.target))
    app = RequireAuthenticatedSidecar(gateway, gateway.upstream) if exposed else gateway
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), lifespan="on")
    return 0
