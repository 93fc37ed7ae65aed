"""The ``airflow-sidecar`` command line: every command, every option described, each with an example.

The connection options (target, timeout, token, TLS) are one documented group from
:func:`sidecar.config.add_connection_arguments`, shared by ``backfill``, ``doctor`` and
``gateway``; ``serve``'s options come from :func:`sidecar.config.add_server_arguments`. A unit
test walks this parser and fails on an option without a help text or a command without an
example.
"""

from __future__ import annotations

import argparse

from sidecar.cli._completion import add_completion_command
from sidecar.cli._doctor import add_doctor_command
from sidecar.cli._tokens import add_token_command
from sidecar.config import DEFAULT_TARGET, add_connection_arguments, add_server_arguments

_RAW = argparse.RawDescriptionHelpFormatter

#: The examples shown under each command's help (argparse epilogs), by command path.
EXAMPLES: dict[str, str] = {
    "": "airflow-sidecar doctor                       # is everything set up?\n"
    "airflow-sidecar backfill create --dag-id my_dag --from-date 2025-01-01 --to-date 2025-01-31 --dry-run\n"
    "airflow-sidecar <command> --help             # every option, with an example",
    "serve": 'export SIDECAR_JWT_SECRET="$(airflow config get-value api_auth jwt_secret)"\n'
    "airflow-sidecar serve --database-url postgresql://airflow:***@db:5432/airflow\n"
    "airflow-sidecar serve --no-auth --database-url sqlite:////home/me/airflow/airflow.db  # laptop only",
    "scheduler": f"SIDECAR_TARGET={DEFAULT_TARGET} SIDECAR_TOKEN=... airflow-sidecar scheduler",
    "completion": 'eval "$(airflow-sidecar completion bash)"',
    "token": "airflow-sidecar token jwt --subject airflow-scheduler --role scheduler --valid-for 86400",
    "token jwt": 'export SIDECAR_JWT_SECRET="$(airflow config get-value api_auth jwt_secret)"\n'
    'export SIDECAR_TOKEN="$(airflow-sidecar token jwt --subject airflow-scheduler --role scheduler)"',
    "token hash": "openssl rand -hex 32 | tee ci.token | airflow-sidecar token hash --principal ci --role ops",
    "gateway": f"airflow-sidecar gateway --listen 127.0.0.1:8080 --target {DEFAULT_TARGET}",
    "backfill": "airflow-sidecar backfill create --dag-id my_dag --from-date 2025-01-01 --to-date 2025-03-31 --watch\n"
    "airflow-sidecar backfill list --state active",
    "backfill create": "airflow-sidecar backfill create --dag-id my_dag --from-date 2025-01-01 "
    "--to-date 2025-03-31 --dry-run\n"
    "airflow-sidecar backfill create --dag-id my_dag --from-date 2025-01-01 --to-date 2025-03-31 \\\n"
    "    --max-active-runs 4 --reprocess-behavior failed --watch\n"
    "airflow-sidecar backfill create --dag-id my_dag --from-date 2025-01-01 --to-date 2025-03-31 \\\n"
    "    --task-regex '^load_' --include-downstream --watch",
    "backfill get": "airflow-sidecar backfill get 7 --watch",
    "backfill pause": "airflow-sidecar backfill pause 7",
    "backfill unpause": "airflow-sidecar backfill unpause 7",
    "backfill cancel": "airflow-sidecar backfill cancel 7 --terminate-running",
    "backfill list": "airflow-sidecar backfill list --dag-id my_dag --state completed --output json",
    "backfill runs": "airflow-sidecar backfill runs 7 --all --output json > runs.json",
    "doctor": "airflow-sidecar doctor --database-url postgresql://airflow:***@db:5432/airflow\n"
    "# where the scheduler runs, with its environment (SIDECAR_TARGET, SIDECAR_TOKEN):\n"
    "airflow-sidecar doctor --as-scheduler",
}


def _example(parser: argparse.ArgumentParser, path: str) -> None:
    parser.epilog = "example:\n" + "\n".join(f"  {line}" for line in EXAMPLES[path].splitlines())
    parser.formatter_class = _RAW


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        "-o",
        choices=("table", "json"),
        default="table",
        help="table (for people, default) or json (for scripts: the API's field names)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="airflow-sidecar",
        description="Serve the backfill sidecar, run Airflow's scheduler with its shim, and drive backfills.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks (errors are otherwise one or two lines)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gRPC sidecar on Airflow's metadata database",
        description="Run the sidecar: check the database, create its own tables, serve gRPC.",
    )
    add_server_arguments(serve)
    add_doctor_command(commands)
    add_completion_command(commands)
    add_token_command(commands)
    from sidecar.gateway import add_gateway_parser

    add_gateway_parser(commands)
    commands.add_parser(
        "scheduler",
        help="run `airflow scheduler` with the sidecar shim (same arguments; --help lists SIDECAR_* settings)",
        add_help=False,
    )
    _add_backfill(commands)
    for path, sub in _commands(parser):
        _example(sub, path)
    return parser


def _commands(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command parser with its path ("" for the top level)."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{path} {name}".strip())
    return found


def _add_backfill(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The connection options are accepted before or after the action.
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(connection)
    backfill = commands.add_parser("backfill", help="create and steer backfills", parents=[connection])
    actions = backfill.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[connection], help="create a backfill (or plan one with --dry-run)"
    )
    create.add_argument("--dag-id", required=True, help="the DAG to backfill (it must allow backfills)")
    create.add_argument(
        "--from-date",
        default=None,
        help="ISO date/datetime, inclusive, with an optional UTC offset kept as Airflow keeps it (none: UTC); "
        "or --from-partition-key",
    )
    create.add_argument(
        "--to-date",
        default=None,
        help="ISO date/datetime, inclusive, with an optional UTC offset (none: UTC); or --to-partition-key",
    )
    create.add_argument(
        "--from-partition-key",
        default=None,
        help="partitioned DAGs: the first partition, by its key (the timetable's key_format), instead of --from-date",
    )
    create.add_argument(
        "--to-partition-key",
        default=None,
        help="partitioned DAGs: the last partition, by its key, instead of --to-date",
    )
    create.add_argument(
        "--max-active-runs", type=int, default=None, help="runs of this backfill running at once (default 10)"
    )
    create.add_argument(
        "--reprocess-behavior",
        choices=("none", "failed", "completed"),
        default="none",
        help="existing runs in the range: none = skip them all (default), failed = re-run the failed "
        "ones, completed = re-run every finished one (as Airflow's backfill)",
    )
    create.add_argument(
        "--run-backwards",
        action="store_true",
        help="run the newest date first (refused with depends_on_past)",
    )
    create.add_argument(
        "--run-on-latest-version",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reprocessed runs move to the backfill's DAG version (--no-run-on-latest-version: they "
        "stay on their own); default: the DAG's rerun_with_latest_version, then Airflow's [core] "
        "setting, then yes. New runs always get the DAG version of the backfill's creation",
    )
    create.add_argument(
        "--ordering",
        choices=("oldest-first", "newest-first"),
        default=None,
        help="the order runs are made and started in; newest-first is --run-backwards",
    )
    create.add_argument(
        "--dag-run-conf",
        default=None,
        help="JSON object passed to every run (checked against the DAG's params)",
    )
    subset = create.add_argument_group(
        "task subsets", "run only some tasks; the others are marked removed in each run (docs/controls.md)"
    )
    selector = subset.add_mutually_exclusive_group()
    selector.add_argument(
        "--task-regex", default=None, help="run only the tasks whose id this Python regex matches (re.search)"
    )
    selector.add_argument(
        "--task-id", action="append", default=None, help="run only this task (repeat for more)"
    )
    subset.add_argument(
        "--include-upstream", action="store_true", help="also run every upstream of the selected tasks"
    )
    subset.add_argument(
        "--include-downstream", action="store_true", help="also run every downstream of the selected tasks"
    )
    create.add_argument(
        "--mode",
        choices=("windowed", "eager"),
        default="windowed",
        help="windowed = write runs just ahead of max-active-runs as the scheduler needs them (default); "
        "eager = write every run up front, like Airflow, but in bulk",
    )
    create.add_argument("--request-id", default=None, help="makes a retried create idempotent")
    # The controls beyond Airflow's (docs/controls.md).
    create.add_argument(
        "--concurrent",
        action="store_true",
        help="run beside the DAG's other open backfills (their date ranges must not overlap this one's)",
    )
    create.add_argument(
        "--dag-max-active-runs",
        type=int,
        default=None,
        help="start a run only while fewer backfill runs of the DAG (all its backfills) are running",
    )
    create.add_argument(
        "--max-failed-runs",
        type=int,
        default=None,
        help="pause the backfill once this many of its runs have failed (the reason is shown)",
    )
    create.add_argument(
        "--priority",
        type=int,
        default=0,
        help="higher first where the scheduler chooses which backfill runs start (default 0)",
    )
    create.add_argument(
        "--dry-run",
        action="store_true",
        help="plan only; write nothing (a summary for large plans: --all or --output json lists every run)",
    )
    create.add_argument(
        "--all", action="store_true", help="with --dry-run: list every planned run, not a summary"
    )
    create.add_argument(
        "--summary",
        action="store_true",
        help="with --dry-run: only the whole plan's counts (create, reprocess, skipped), its first and "
        "last run and an estimate of how long it takes from the DAG's run history; no run is listed",
    )
    create.add_argument(
        "--webhook-url",
        metavar="URL",
        help="POST the backfill's events (paused, cancelled, completed, failed_threshold) to URL, signed "
        "with the server's webhook secret (docs/controls.md)",
    )
    create.add_argument(
        "--webhook-format",
        choices=["json", "slack"],
        default="json",
        help="json = the event as JSON (default); slack = a Slack incoming-webhook message",
    )
    create.add_argument(
        "--watch",
        action="store_true",
        help="follow progress until the backfill ends (a progress bar on a terminal)",
    )
    _output(create)

    for action, text in (
        ("get", "show a backfill"),
        ("pause", "pause a backfill (its running runs finish, no new one starts)"),
        ("unpause", "unpause a backfill"),
        ("cancel", "cancel a backfill"),
    ):
        sub = actions.add_parser(action, help=text, parents=[connection])
        sub.add_argument("id", help="backfill id (or backfills/<id>)")
        if action == "get":
            sub.add_argument("--watch", action="store_true", help="follow progress until the backfill ends")
        if action == "cancel":
            sub.add_argument(
                "--terminate-running",
                action="store_true",
                help="also stop running runs (running tasks fail, unfinished ones are skipped)",
            )
        _output(sub)
    listing = actions.add_parser("list", parents=[connection], help="list backfills, newest first")
    listing.add_argument("--dag-id", default=None, help="only this DAG's backfills")
    listing.add_argument(
        "--state",
        choices=("active", "paused", "completed", "cancelled"),
        default=None,
        help="only backfills in this state",
    )
    _limit(listing, 50, "backfills")
    _output(listing)
    runs = actions.add_parser("runs", parents=[connection], help="list a backfill's runs in plan order")
    runs.add_argument("id", help="backfill id (or backfills/<id>)")
    _limit(runs, 100, "runs")
    _output(runs)


def _limit(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    parser.add_argument(
        "--limit",
        type=int,
        default=default,
        help=f"show at most this many {what} (default {default}; the output says when more exist)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help=f"show every {what[:-1]}, following pages (progress on stderr)",
    )
