"""``airflow-sidecar``: serve the sidecar, run Airflow's scheduler with the shim, and drive backfills.

Every error a user can cause is one or two lines on stderr saying what is wrong and what to do
(:mod:`sidecar.cli._problems`), and a non-zero exit code; ``--debug`` shows the traceback. The
parser lives in :mod:`sidecar.cli._parser`, ``doctor`` in :mod:`sidecar.cli._doctor`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import grpc

from sidecar.auth import check_auth
from sidecar.cli._client import UsageError, run_command
from sidecar.cli._completion import autocomplete, completion_script
from sidecar.cli._doctor import run_doctor
from sidecar.cli._parser import build_parser
from sidecar.cli._problems import database_problem, missing_file_problem, missing_sqlite_file, rpc_problem
from sidecar.cli._tokens import TokenUsageError, run_token_command
from sidecar.config import ClientSettings, ServerSettings, shim_help

#: Every RPC and the command that reaches it (the contract test holds the two together).
RPC_COMMANDS: dict[str, tuple[str, ...]] = {
    "/airflow_sidecar.v1.BackfillService/CreateBackfill": ("backfill", "create"),
    "/airflow_sidecar.v1.BackfillService/GetBackfill": ("backfill", "get"),
    "/airflow_sidecar.v1.BackfillService/ListBackfills": ("backfill", "list"),
    "/airflow_sidecar.v1.BackfillService/PauseBackfill": ("backfill", "pause"),
    "/airflow_sidecar.v1.BackfillService/UnpauseBackfill": ("backfill", "unpause"),
    "/airflow_sidecar.v1.BackfillService/CancelBackfill": ("backfill", "cancel"),
    "/airflow_sidecar.v1.BackfillService/ListBackfillRuns": ("backfill", "runs"),
    "/airflow_sidecar.v1.BackfillService/WatchBackfill": ("backfill", "get", "--watch"),
    "/airflow_sidecar.v1.SchedulerService/Tick": ("scheduler",),
}


def _serve(args: argparse.Namespace) -> int:
    from sidecar.observability import configure_logging
    from sidecar.server import serve

    try:
        settings = ServerSettings.from_args(args)
        configure_logging(settings.log_level, settings.log_format)
        check_auth(settings.auth, settings.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:  # opening it would create an empty file and then fail the schema check
        raise UsageError(f"database check failed: {missing_file_problem(missing)}")
    try:
        asyncio.run(serve(settings))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except Exception as exc:
        problem = database_problem(exc, settings.database_url)
        if problem is None or args.debug:
            raise
        raise UsageError(f"database check failed: {problem}") from exc
    return 0


def _target(args: argparse.Namespace) -> str:
    try:
        return ClientSettings.from_args(args).target
    except ValueError:
        return "the sidecar"


def _run(args: argparse.Namespace) -> int:
    if args.command == "completion":
        print(completion_script(args.shell))
        return 0
    if args.command == "token":
        try:
            return run_token_command(args)
        except TokenUsageError as exc:
            raise UsageError(str(exc)) from exc
    if args.command == "doctor":
        return run_doctor(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "gateway":
        from sidecar.gateway import run_gateway

        try:
            return run_gateway(args)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return run_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``airflow-sidecar`` command.

    Every error a user can cause is one or two lines on stderr (what is wrong, what to do) and a
    non-zero exit code: 2 for a bad setting, 1 for a failed call; ``--debug`` shows tracebacks.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scheduler"]:
        from airflow_shim.launcher import run_scheduler

        if {"-h", "--help"} & set(argv[1:]):
            print(shim_help())  # then Airflow's own help for the scheduler command

        return run_scheduler(argv[1:])
    parser = build_parser()
    autocomplete(parser)
    # --debug is global: accepted anywhere before a `--`, so it can be added to any failing command.
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    args = parser.parse_args([a for a in argv[:end] if a != "--debug"] + argv[end:])
    args.debug = debug
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`... --all | head`): stop quietly, as a command killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, UsageError):
            print(f"airflow-sidecar: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, grpc.RpcError):
            print(f"airflow-sidecar: {rpc_problem(exc, _target(args))}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError):
            print(f"airflow-sidecar: error: {exc}", file=sys.stderr)
            return 1
        print(
            f"airflow-sidecar: error: unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
