"""``airflow-sidecar``: serve the sidecar, run Airflow's scheduler with the shim, and drive backfills.

Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import grpc

from sidecar.cli._client import UsageError, run_command
from sidecar.errors import SchemaMismatch

DEFAULT_TARGET = "127.0.0.1:50051"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(prog="airflow-sidecar", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC sidecar")
    serve.add_argument(
        "--database-url",
        default=_env("SIDECAR_DATABASE_URL"),
        help="SQLAlchemy URL of Airflow's metadata DB (postgresql+asyncpg://… or "
        "sqlite+aiosqlite:///…); env SIDECAR_DATABASE_URL",
    )
    serve.add_argument(
        "--listen",
        default=_env("SIDECAR_LISTEN", "127.0.0.1:50051"),
        help="host:port to listen on (default 127.0.0.1:50051); env SIDECAR_LISTEN",
    )
    serve.add_argument(
        "--tick-interval", type=float, default=5.0, help="seconds between the sidecar's own ticks (default 5)"
    )
    serve.add_argument("--log-level", default=_env("SIDECAR_LOG_LEVEL", "INFO"))

    commands.add_parser(
        "scheduler", help="run `airflow scheduler` with the sidecar shim (same arguments)", add_help=False
    )

    # --target and --timeout are accepted before or after the action.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--target",
        default=argparse.SUPPRESS,
        help="sidecar address (default 127.0.0.1:50051); env SIDECAR_TARGET",
    )
    connection.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds per call (default 600)"
    )
    backfill = commands.add_parser("backfill", help="create and steer backfills", parents=[connection])
    actions = backfill.add_subparsers(dest="action", required=True)

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output", "-o", choices=("table", "json"), default="table")

    create = actions.add_parser(
        "create", parents=[connection], help="create a backfill (or plan one with --dry-run)"
    )
    create.add_argument("--dag-id", required=True)
    create.add_argument("--from-date", required=True, help="ISO date/datetime, inclusive (no offset: UTC)")
    create.add_argument("--to-date", required=True, help="ISO date/datetime, inclusive (no offset: UTC)")
    create.add_argument("--max-active-runs", type=int, default=None, help="default 10")
    create.add_argument("--reprocess-behavior", choices=("none", "failed", "completed"), default="none")
    create.add_argument("--run-backwards", action="store_true")
    create.add_argument("--dag-run-conf", default=None, help="JSON object")
    create.add_argument("--mode", choices=("windowed", "eager"), default="windowed")
    create.add_argument("--request-id", default=None, help="makes a retried create idempotent")
    create.add_argument("--dry-run", action="store_true", help="plan only; write nothing")
    create.add_argument("--watch", action="store_true", help="follow progress until the backfill ends")
    output(create)

    for action, text in (
        ("get", "show a backfill"),
        ("pause", "pause a backfill"),
        ("unpause", "unpause a backfill"),
        ("cancel", "cancel a backfill"),
    ):
        sub = actions.add_parser(action, help=text, parents=[connection])
        sub.add_argument("id", help="backfill id (or backfills/<id>)")
        if action == "get":
            sub.add_argument("--watch", action="store_true")
        output(sub)
    listing = actions.add_parser("list", parents=[connection], help="list backfills, newest first")
    listing.add_argument("--dag-id", default=None)
    listing.add_argument("--state", choices=("active", "paused", "completed", "cancelled"), default=None)
    listing.add_argument("--limit", type=int, default=50)
    output(listing)
    runs = actions.add_parser("runs", parents=[connection], help="list a backfill's runs in plan order")
    runs.add_argument("id")
    runs.add_argument("--limit", type=int, default=100)
    output(runs)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from sidecar.server import ServerConfig, serve

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.database_url:
        raise UsageError("--database-url (or SIDECAR_DATABASE_URL) is required")
    try:
        asyncio.run(
            serve(
                ServerConfig(
                    database_url=args.database_url, listen=args.listen, tick_interval=args.tick_interval
                )
            )
        )
    except SchemaMismatch as exc:
        raise UsageError(f"database check failed: {exc}") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``airflow-sidecar`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scheduler"]:
        from airflow_shim.launcher import run_scheduler

        return run_scheduler(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        args.target = getattr(args, "target", None) or _env("SIDECAR_TARGET", DEFAULT_TARGET)
        args.timeout = getattr(args, "timeout", None) or 600.0
        return run_command(args)
    except UsageError as exc:
        print(f"airflow-sidecar: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"airflow-sidecar: {code.name if code else 'ERROR'}: {detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"airflow-sidecar: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
