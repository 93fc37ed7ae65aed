"""Following a backfill: a real progress bar (rich: elapsed time and ETA) on a terminal, plain lines elsewhere.

On a terminal the bar redraws in place and is cleared properly (rich handles the cursor);
anywhere else (a log file, CI, a pipe) each change of the counts is one plain line, with no
carriage returns that would garble a log.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.cli._plans import span


def state_text(b: pb.Backfill) -> str:
    """The state, why the sidecar paused it, and whether writing its runs is failing.

    E.g. ``active, set aside``, ``active, retrying (2)``, ``paused: 3 failed runs reached max_failed_runs 3``.
    """
    state = pb.Backfill.State.Name(b.state).removeprefix("STATE_").lower()
    if b.pause_reason:  # paused by the sidecar: its failed runs reached --max-failed-runs
        state = f"{state}: {b.pause_reason}"
    if not b.HasField("write_failure"):
        return state
    failure = b.write_failure
    return f"{state}, set aside" if failure.set_aside else f"{state}, retrying ({failure.attempts})"


def totals(b: pb.Backfill) -> tuple[int, int]:
    """``(finished, total)`` runs: skipped slots are not runs to wait for.

    While the plan is still being counted (``progress.planned_is_counting``) the total is a
    lower bound: show it with :func:`at_least`.
    """
    p = b.progress
    return p.succeeded + p.failed, max(p.planned - p.skipped, 0)


def at_least(count: int, b: pb.Backfill) -> str:
    """``count``, marked ``12+`` while the backfill's plan is still being counted."""
    return f"{count}+" if b.progress.planned_is_counting else str(count)


def counts(b: pb.Backfill) -> str:
    """The counts of a backfill's runs in one short phrase."""
    p = b.progress
    return (
        f"succeeded={p.succeeded} failed={p.failed} running={p.running} queued={p.queued} "
        f"written={p.written}/{at_least(p.planned, b)} skipped={p.skipped} {state_text(b)}"
    )


def progress_line(b: pb.Backfill) -> str:
    """One plain line: runs finished of runs to run, and the counts.

    E.g. ``backfill 7: 0/12+ runs (plan still being counted)  succeeded=0 …`` right after a
    large windowed create, then ``0/100000 runs …`` once the count landed.
    """
    finished, total = totals(b)
    eta = ""
    counting = b.progress.planned_is_counting
    # A paused backfill starts no run: a time left would be a promise it does not keep.
    if b.HasField("estimate") and b.state == pb.Backfill.STATE_ACTIVE:
        if b.estimate.plan_is_counting:  # no time left made up from a partial count
            eta = "  eta once the plan is counted"
        elif b.estimate.runs_remaining:
            eta = f"  eta ~{span(b.estimate.remaining_p50.ToTimedelta())}"
    note = " (plan still being counted)" if counting else ""
    runs = "runs" if counting or total != 1 else "run"
    return f"backfill {b.id}: {finished}/{at_least(total, b)} {runs}{note}  {counts(b)}{eta}"


def follow(updates: Iterable[pb.Backfill], stream: TextIO | None = None) -> pb.Backfill:
    """Show each update until the stream ends; return the last one.

    Args:
        updates: the backfill as the sidecar reports it (``WatchBackfill``).
        stream: where progress goes (default stderr); a terminal gets the bar.
    """
    last = pb.Backfill()
    out = stream or sys.stderr
    if not out.isatty():
        previous = ""
        for last in updates:
            line = progress_line(last)
            if line != previous:
                print(line, file=out, flush=True)
                previous = line
        return last
    columns = (
        TextColumn("backfill {task.fields[id]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[short]}"),
    )
    with Progress(*columns, console=Console(file=out), transient=False) as bar:
        task = bar.add_task("backfill", total=None, id="", short="")
        for last in updates:
            finished, total = totals(last)
            p = last.progress
            short = f"failed {p.failed} running {p.running} queued {p.queued} {state_text(last)}"
            if p.planned_is_counting:  # the total is not known yet: no bar, no ETA from a part of it
                short += f", plan still being counted ({total}+ runs so far)"
            known = total if total and not p.planned_is_counting else None
            bar.update(task, completed=finished, total=known, id=last.id, short=short)
    return last
