"""The ``airflow-sidecar backfill …`` commands: a gRPC client with table and JSON output."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.channel import open_channel
from sidecar.cli._plans import SUMMARY_ABOVE, iso, size_line, summary, summary_dict
from sidecar.cli._progress import at_least, follow, state_text, totals
from sidecar.config import ClientSettings
from sidecar.names import BACKFILLS, backfill_name
from sidecar.vocabulary import counted

_REPROCESS = {
    "none": pb.REPROCESS_BEHAVIOR_NONE,
    "failed": pb.REPROCESS_BEHAVIOR_FAILED,
    "completed": pb.REPROCESS_BEHAVIOR_COMPLETED,
}
_MODES = {"windowed": pb.MODE_WINDOWED, "eager": pb.MODE_EAGER}
_ORDERINGS = {
    None: pb.ORDERING_UNSPECIFIED,
    "oldest-first": pb.ORDERING_OLDEST_FIRST,
    "newest-first": pb.ORDERING_NEWEST_FIRST,
}
_STATES = {
    "active": pb.Backfill.STATE_ACTIVE,
    "paused": pb.Backfill.STATE_PAUSED,
    "completed": pb.Backfill.STATE_COMPLETED,
    "cancelled": pb.Backfill.STATE_CANCELLED,
}
_ENDED = (pb.Backfill.STATE_COMPLETED, pb.Backfill.STATE_CANCELLED)


#: The servers' largest pages (ListBackfills, ListBackfillRuns).
LIST_PAGE_MAX = 500
RUNS_PAGE_MAX = 1000

T = TypeVar("T")


class UsageError(Exception):
    """A bad command-line value; printed as one line."""


def _positive(limit: int) -> int:
    if limit < 1:
        raise UsageError("--limit must be at least 1 (or use --all)")
    return limit


#: The range of the API's int32 fields (``max_active_runs``, ``priority``, ...).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def int32(value: int, flag: str) -> int:
    """``value`` if it fits the API's 32-bit field; the sidecar checks the field's own range."""
    if not INT32_MIN <= value <= INT32_MAX:
        raise UsageError(f"{flag}: {value} is out of range (the API takes {INT32_MIN} to {INT32_MAX})")
    return value


def parse_when(value: str, flag: str) -> dt.datetime:
    """An ISO date or datetime; a value without offset is taken as UTC (Airflow's default time zone).

    Raises:
        UsageError: not ISO 8601, or its UTC instant falls outside the years 1..9999.
    """
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(
            f"{flag}: {value!r} is not an ISO 8601 date or datetime (e.g. 2025-01-01 or 2025-01-01T06:00)"
        ) from exc
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    try:
        when.astimezone(dt.UTC)  # 0001-01-01T00:00+05:00 is in year 0 in UTC
    except OverflowError as exc:
        raise UsageError(
            f"{flag}: {value!r} is out of range (its UTC instant is before year 1 or after 9999)"
        ) from exc
    return when


_WEBHOOK_FORMATS = {"json": pb.Webhook.FORMAT_JSON, "slack": pb.Webhook.FORMAT_SLACK}


def _set_webhook(backfill: pb.Backfill, args: argparse.Namespace) -> None:
    """``--webhook-url`` and ``--webhook-format`` into the request."""
    if args.webhook_url is not None:
        backfill.webhook.url = args.webhook_url
        backfill.webhook.format = _WEBHOOK_FORMATS[args.webhook_format]


def _set_bound(backfill: pb.Backfill, end: str, date: str | None, key: str | None) -> None:
    """``--<end>-date`` or ``--<end>-partition-key`` (exactly one) into the request."""
    if (date is None) == (key is None):
        raise UsageError(f"give --{end}-date or --{end}-partition-key (exactly one)")
    if key is not None:
        setattr(backfill, f"{end}_partition_key", key)
    else:
        assert date is not None
        when = parse_when(date, f"--{end}-date")
        getattr(backfill, f"{end}_date").FromDatetime(when.astimezone(dt.UTC))
        # The offset it was written in travels beside the instant: Airflow keeps it (run ids).
        offset = when.utcoffset()
        setattr(backfill, f"{end}_date_utc_offset_seconds", int(offset.total_seconds()) if offset else 0)


_DISPOSITION_NAMES = {
    pb.DISPOSITION_CREATE: "create",
    pb.DISPOSITION_REPROCESS: "reprocess",
    pb.DISPOSITION_ALREADY_EXISTS: "skip: already exists",
    pb.DISPOSITION_IN_FLIGHT: "skip: in flight",
    pb.DISPOSITION_PENDING: "pending",
}


def run_dict(run: pb.BackfillRun) -> dict[str, Any]:
    """A planned or written slot as plain JSON."""
    out: dict[str, Any] = {
        "sort_ordinal": run.sort_ordinal,
        "logical_date": iso(run.logical_date),
        "data_interval_start": iso(run.data_interval_start),
        "data_interval_end": iso(run.data_interval_end),
        "run_after": iso(run.run_after),
        "run_id": run.run_id,
        "action": _DISPOSITION_NAMES.get(run.disposition, "unknown"),
    }
    if run.partition_key:  # a partition's slot: no logical date nor data interval
        out["partition_key"] = run.partition_key
        out["partition_date"] = iso(run.partition_date) if run.HasField("partition_date") else None
    if run.dag_run_id:
        out["existing_dag_run_id" if run.disposition != pb.DISPOSITION_CREATE else "dag_run_id"] = (
            run.dag_run_id
        )
        out["state"] = run.state
    return out


#: The estimate's fields not known while its plan is counted: null in the CLI's JSON, as in
#: the dry-run summary's and Airflow's ``/api/v2`` (proto3 JSON, ``/v1``, leaves them out).
_NOT_KNOWN_WHILE_COUNTING = ("runs_remaining", "remaining_p50", "remaining_p90")


def backfill_dict(b: pb.Backfill) -> dict[str, Any]:
    """A backfill as plain JSON (proto3 JSON mapping, field names as in the proto).

    Every field is printed: those not known yet (the runs and time left while the plan is
    counted) as null.
    """
    out: dict[str, Any] = json_format.MessageToDict(
        b, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    if b.HasField("estimate") and b.estimate.plan_is_counting:
        out["estimate"].update(dict.fromkeys(_NOT_KNOWN_WHILE_COUNTING))
    return out


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _set_controls(backfill: pb.Backfill, args: argparse.Namespace) -> None:
    """The controls beyond Airflow's fields (docs/controls.md), those given on the command line."""
    if args.max_failed_runs is not None:
        backfill.max_failed_runs = int32(args.max_failed_runs, "--max-failed-runs")
    if args.dag_max_active_runs is not None:
        backfill.dag_max_active_runs = int32(args.dag_max_active_runs, "--dag-max-active-runs")
    backfill.priority = int32(args.priority, "--priority")
    backfill.concurrent = args.concurrent


def failure_line(b: pb.Backfill) -> str | None:
    """Why writing a backfill's runs failed, in one line; None if it did not."""
    if not b.HasField("write_failure"):
        return None
    f = b.write_failure
    what = (
        "set aside (unpause to retry, or cancel)"
        if f.set_aside
        else f"retrying ({counted(f.attempts, 'attempt')})"
    )
    return f"backfill {b.id} {what}: {f.reason}: {f.message}"


def _task_selection(args: argparse.Namespace) -> pb.TaskSelection | None:
    """``--task-regex`` / ``--task-id`` with ``--include-upstream`` / ``--include-downstream``.

    Raises:
        UsageError: an include flag without a selector.
    """
    if args.task_regex is None and not args.task_id:
        if args.include_upstream or args.include_downstream:
            raise UsageError("--include-upstream and --include-downstream need --task-regex or --task-id")
        return None
    return pb.TaskSelection(
        task_regex=args.task_regex or "",
        task_ids=args.task_id or [],
        include_upstream=args.include_upstream,
        include_downstream=args.include_downstream,
    )


def selection_line(b: pb.Backfill) -> str | None:
    """The tasks a backfill runs, in one line; None when it runs every task."""
    if not b.HasField("task_selection"):
        return None
    ids = list(b.task_selection.selected_task_ids)
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    name = f"backfill {b.id}" if b.id else "the backfill"
    return f"{name} runs only {counted(len(ids), 'task')}: {shown}"


def webhook_line(b: pb.Backfill) -> str | None:
    """How the backfill's webhook deliveries stand, in one line, when some are not delivered; else None."""
    if not b.HasField("webhook") or not (b.webhook.undelivered or b.webhook.given_up):
        return None
    w = b.webhook
    error = f"; last error: {w.last_error}" if w.last_error else ""
    return f"backfill {b.id} webhook {w.target}: {w.undelivered} undelivered, {w.given_up} given up{error}"


def print_backfills(backfills: Sequence[pb.Backfill], output: str) -> None:
    """Print backfills as a table or JSON."""
    if output == "json":
        print(json.dumps([backfill_dict(b) for b in backfills], indent=2))
        return
    rows = [
        (
            b.id,
            b.dag_id,
            iso(b.from_date),
            iso(b.to_date),
            state_text(b),
            b.max_active_runs,
            f"{b.progress.succeeded}/{at_least(b.progress.planned, b)}",
            b.progress.running,
            b.progress.queued,
            b.progress.failed,
        )
        for b in backfills
    ]
    print(
        _table(
            rows, ("id", "dag_id", "from", "to", "state", "max_active", "done", "running", "queued", "failed")
        )
    )
    for b in backfills:
        for line in (counting_line(b), failure_line(b), pause_line(b), webhook_line(b), selection_line(b)):
            if line:
                print(line)


def counting_line(b: pb.Backfill) -> str | None:
    """That a backfill's plan is still being counted (its ``planned`` a lower bound); None once counted."""
    if not b.progress.planned_is_counting:
        return None
    return (
        f"backfill {b.id}: its plan is still being counted: {b.progress.planned}+ planned "
        "(the slots written so far); the exact number follows"
    )


def pause_line(b: pb.Backfill) -> str | None:
    """Why the sidecar paused a backfill (its failed runs reached ``--max-failed-runs``); None if it did not."""
    return (
        f"backfill {b.id} paused: {b.pause_reason} (unpause to go on, or cancel)" if b.pause_reason else None
    )


def watch(stub: backfill_pb2_grpc.BackfillServiceStub, name: str, output: str) -> pb.Backfill:
    """Follow a backfill until it ends: a progress bar on a terminal, plain lines elsewhere, or JSON lines."""
    stream = stub.WatchBackfill(pb.WatchBackfillRequest(name=name))
    if output != "json":

        def updates() -> Iterator[pb.Backfill]:
            for update in stream:
                for event in update.events:
                    print(f"backfill {update.backfill.id}: {event.kind}", file=sys.stderr, flush=True)
                yield update.backfill

        return follow(updates())
    last = pb.Backfill()
    for update in stream:
        line = backfill_dict(update.backfill)
        if update.events:
            line["events"] = [
                json_format.MessageToDict(e, preserving_proto_field_name=True) for e in update.events
            ]
        print(json.dumps(line), flush=True)
        last = update.backfill
    return last


def collect(
    fetch: Callable[[int, str], tuple[Sequence[T], str]], limit: int | None, page_max: int, what: str
) -> list[T]:
    """Follow pages until ``limit`` items (None: all), saying on stderr when the output is cut.

    Args:
        fetch: one call: ``(page_size, page_token) -> (items, next_page_token)``.
        limit: the most items to return; None follows every page, with a progress line each.
        page_max: the server's largest page.
        what: the items' name, for the messages.
    """
    items: list[T] = []
    token = ""
    while True:
        size = page_max if limit is None else min(page_max, limit - len(items))
        page, token = fetch(size, token)
        items += page
        if not token:
            return items
        if limit is None:
            print(f"fetched {len(items)} {what} so far...", file=sys.stderr, flush=True)
        elif len(items) >= limit:
            print(
                f"showing the first {len(items)} {what}; more exist: raise --limit or use --all",
                file=sys.stderr,
            )
            return items


def _rows_of_runs(runs: Sequence[dict[str, Any]]) -> str:
    date = "partition_key" if any("partition_key" in r for r in runs) else "logical_date"
    return _table(
        [(r["sort_ordinal"], r.get(date), r["run_id"], r["action"], r.get("state")) for r in runs],
        ("ordinal", date, "run_id", "action", "state"),
    )


def _name(value: str) -> str:
    return value if value.startswith(f"{BACKFILLS}/") else backfill_name(value)


def run_command(args: argparse.Namespace) -> int:
    """Run one ``backfill`` subcommand; gRPC errors are raised to the caller."""
    try:
        settings = ClientSettings.from_args(args)
        channel = open_channel(settings.target, settings.security)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    with channel:
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        timeout = settings.timeout
        if args.action == "create":
            return _create(stub, args, timeout)
        if args.action == "get":
            b = stub.GetBackfill(pb.GetBackfillRequest(name=_name(args.id)), timeout=timeout).backfill
            if args.watch and b.state not in _ENDED:
                b = watch(stub, b.name, args.output)
            print_backfills([b], args.output)
            return 0
        if args.action == "list":
            state = _STATES.get(args.state or "", pb.Backfill.STATE_UNSPECIFIED)

            def backfills(size: int, token: str) -> tuple[Sequence[pb.Backfill], str]:
                request = pb.ListBackfillsRequest(
                    dag_id=args.dag_id or "", page_size=size, page_token=token, state=state
                )
                response = stub.ListBackfills(request, timeout=timeout)
                return response.backfills, response.next_page_token

            limit = None if args.all else _positive(args.limit)
            print_backfills(collect(backfills, limit, LIST_PAGE_MAX, "backfills"), args.output)
            return 0
        if args.action == "runs":
            parent = _name(args.id)

            def page_of_runs(size: int, token: str) -> tuple[Sequence[pb.BackfillRun], str]:
                request = pb.ListBackfillRunsRequest(parent=parent, page_size=size, page_token=token)
                response = stub.ListBackfillRuns(request, timeout=timeout)
                return response.runs, response.next_page_token

            limit = None if args.all else _positive(args.limit)
            runs = [run_dict(r) for r in collect(page_of_runs, limit, RUNS_PAGE_MAX, "runs")]
            print(json.dumps(runs, indent=2) if args.output == "json" else _rows_of_runs(runs))
            return 0
        name = _name(args.id)
        if args.action == "pause":
            b = stub.PauseBackfill(pb.PauseBackfillRequest(name=name), timeout=timeout).backfill
        elif args.action == "unpause":
            b = stub.UnpauseBackfill(pb.UnpauseBackfillRequest(name=name), timeout=timeout).backfill
        else:
            b = stub.CancelBackfill(
                pb.CancelBackfillRequest(name=name, terminate_running=args.terminate_running), timeout=timeout
            ).backfill
        print_backfills([b], args.output)
        return 0


def _create(
    stub: backfill_pb2_grpc.BackfillServiceStub, args: argparse.Namespace, timeout: float | None
) -> int:
    if args.summary and not args.dry_run:
        raise UsageError("--summary works with --dry-run only")
    conf = ""
    if args.dag_run_conf is not None:
        try:
            parsed = json.loads(args.dag_run_conf)
        except ValueError as exc:
            raise UsageError(f"--dag-run-conf is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # the sidecar takes 64 levels; Python's parser gives up near 1,000
            raise UsageError("--dag-run-conf nests too deeply (the sidecar takes 64 levels)") from exc
        if not isinstance(parsed, dict):
            raise UsageError("--dag-run-conf must be a JSON object")
        conf = json.dumps(parsed)
    backfill = pb.Backfill(
        dag_id=args.dag_id,
        run_backwards=args.run_backwards,
        ordering=_ORDERINGS[args.ordering],
        reprocess_behavior=_REPROCESS[args.reprocess_behavior],
        mode=_MODES[args.mode],
        dag_run_conf=conf,
    )
    _set_bound(backfill, "from", args.from_date, args.from_partition_key)
    _set_bound(backfill, "to", args.to_date, args.to_partition_key)
    if args.max_active_runs is not None:
        backfill.max_active_runs = int32(args.max_active_runs, "--max-active-runs")
    if args.run_on_latest_version is not None:
        backfill.run_on_latest_version = args.run_on_latest_version
    if selection := _task_selection(args):
        backfill.task_selection.CopyFrom(selection)
    _set_controls(backfill, args)
    _set_webhook(backfill, args)
    request = pb.CreateBackfillRequest(
        backfill=backfill,
        validate_only=args.dry_run,
        request_id=args.request_id or "",
        dry_run_view=pb.DRY_RUN_VIEW_SUMMARY if args.summary else pb.DRY_RUN_VIEW_LIST,
    )
    response = stub.CreateBackfill(request, timeout=timeout)
    if args.dry_run:
        if args.summary:
            print(
                json.dumps(summary_dict(response), indent=2) if args.output == "json" else summary(response)
            )
            return 0
        runs = [run_dict(r) for r in response.planned_runs]
        if args.output == "json":
            print(json.dumps(runs, indent=2))
        elif len(runs) > SUMMARY_ABOVE and not args.all:
            print(summary(response))
            return 0
        elif any("partition_key" in r for r in runs):
            keyed = ("sort_ordinal", "partition_key", "partition_date", "run_id", "action")
            print(_table([tuple(r.get(c) for c in keyed) for r in runs], ("ordinal", *keyed[1:])))
        else:
            columns = (
                "sort_ordinal",
                "logical_date",
                "data_interval_start",
                "data_interval_end",
                "run_after",
                "run_id",
                "action",
            )
            headers = (
                "ordinal",
                "logical_date",
                "interval_start",
                "interval_end",
                "run_after",
                "run_id",
                "action",
            )
            print(_table([tuple(r[c] for c in columns) for r in runs], headers))
        print(size_line(response), file=sys.stderr)
        if line := selection_line(response.backfill):
            print(line, file=sys.stderr)
        return 0
    b = response.backfill
    if args.watch:
        _, total = totals(b)
        if b.progress.planned_is_counting:
            to_run = f"at least {counted(total, 'run')} to run (the plan is still being counted)"
        else:
            to_run = f"{counted(total, 'run')} to run"
        print(f"created backfill {b.id} for {b.dag_id}: {to_run}", file=sys.stderr)
        b = watch(stub, b.name, args.output)
        if args.output != "json":
            print_backfills([b], args.output)
        return 0 if b.progress.failed == 0 and b.state == pb.Backfill.STATE_COMPLETED else 1
    print_backfills([b], args.output)
    return 0
