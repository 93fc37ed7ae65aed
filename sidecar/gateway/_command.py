"""``airflow-sidecar gateway``: serve the REST gateway with uvicorn."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sidecar.auth import ClientSecurity
from sidecar.gateway._app import GatewayConfig, create_app
from sidecar.gateway._header_timeout import header_timeout_protocol
from sidecar.observability import configure_logging, setup_tracing

DEFAULT_LISTEN = "127.0.0.1:8080"


def add_gateway_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``gateway`` subcommand."""
    gateway = commands.add_parser(
        "gateway", help="serve the REST gateway (HTTP/JSON) in front of the sidecar"
    )
    gateway.add_argument(
        "--listen",
        default=os.environ.get("SIDECAR_GATEWAY_LISTEN", DEFAULT_LISTEN),
        help="host:port to listen on (default 127.0.0.1:8080); env SIDECAR_GATEWAY_LISTEN",
    )
    gateway.add_argument(
        "--target",
        default=os.environ.get("SIDECAR_TARGET", "127.0.0.1:50051"),
        help="the sidecar's gRPC address (default 127.0.0.1:50051); env SIDECAR_TARGET",
    )
    gateway.add_argument(
        "--max-body-bytes", type=int, default=1024 * 1024, help="largest request body (default 1 MiB)"
    )
    gateway.add_argument("--timeout", type=float, default=60.0, help="seconds per gRPC call (default 60)")
    gateway.add_argument("--log-level", default=os.environ.get("SIDECAR_LOG_LEVEL", "INFO"))
    gateway.add_argument(
        "--tls",
        action="store_true",
        default=os.environ.get("SIDECAR_TLS", "").lower() in {"1", "true", "yes"},
        help="reach the sidecar over TLS (system roots); env SIDECAR_TLS=1",
    )
    gateway.add_argument(
        "--tls-ca",
        default=os.environ.get("SIDECAR_TLS_CA"),
        help="PEM CA bundle of the sidecar; env SIDECAR_TLS_CA",
    )
    gateway.add_argument(
        "--tls-cert",
        default=os.environ.get("SIDECAR_TLS_CLIENT_CERT"),
        help="PEM client certificate for mutual TLS; env SIDECAR_TLS_CLIENT_CERT",
    )
    gateway.add_argument(
        "--tls-key", default=os.environ.get("SIDECAR_TLS_CLIENT_KEY"), help="PEM key of --tls-cert"
    )


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

    host, port = split_listen(args.listen)
    if args.max_body_bytes < 1:
        raise ValueError("--max-body-bytes must be positive")
    configure_logging(args.log_level, "text")  # escapes what callers send (no forged lines)
    security = ClientSecurity(
        tls=args.tls,
        ca=Path(args.tls_ca) if args.tls_ca else None,
        cert=Path(args.tls_cert) if args.tls_cert else None,
        key=Path(args.tls_key) if args.tls_key else None,
    )
    credentials = security.channel_credentials() if security.uses_tls else None
    app = create_app(
        GatewayConfig(
            target=args.target,
            max_body_bytes=args.max_body_bytes,
            timeout=args.timeout,
            credentials=credentials,
            tracer_provider=setup_tracing(),
        )
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=args.log_level.lower(),
        lifespan="on",
        http=header_timeout_protocol(),  # uvicorn has no deadline for request headers of its own
    )
    return 0
