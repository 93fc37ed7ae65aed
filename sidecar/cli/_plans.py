"""A dry run as a newcomer reads it: a summary of a large plan, the full list on request.

A plan of two years of an hourly DAG is 17,520 slots; printing them all buries what matters.
The sidecar counts the whole plan by disposition (``PlanSummary``), not only the listed page:
the runs to run (create, reprocess) apart from the slots skipped (already exists, in flight),
which are not planned runs, the first and last run, and an estimate of how long the runs take
from the DAG's own history. Above :data:`SUMMARY_ABOVE` slots the table output is that summary;
``--summary`` asks for it alone; ``--all`` or ``--output json`` lists every slot.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.estimate_json import estimate_dict
from sidecar.vocabulary import counted

#: Plans with more slots than this are summarised in table output.
SUMMARY_ABOVE = 50


def iso(ts: Timestamp | None) -> str | None:
    """A Timestamp as ISO 8601 in UTC (``2024-01-01T00:00:00+00:00``); None when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=dt.UTC).isoformat()


def span(value: dt.timedelta) -> str:
    """A duration for people: ``45s``, ``12m 30s``, ``3h 05m``, ``2d 4h``."""
    seconds = max(int(value.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def estimate_line(b: pb.Backfill) -> str | None:
    """``~3h 05m (p90 4h 10m) for 120 runs, 10 at a time, from 200 runs of history``; None without one."""
    if not b.HasField("estimate"):
        return None
    e = b.estimate
    source = "this backfill's" if e.basis == "backfill" else "the DAG's latest"
    if e.plan_is_counting:  # the runs left are not known: no time left from a partial count
        return (
            f"a run takes {span(e.run_duration_p50.ToTimedelta())} (p90 {span(e.run_duration_p90.ToTimedelta())}) "
            f"over {source} {counted(e.sample_size, 'finished run')}; the time left follows once the plan is counted"
        )
    return (
        f"~{span(e.remaining_p50.ToTimedelta())} (p90 {span(e.remaining_p90.ToTimedelta())}) for "
        f"{counted(e.runs_remaining, 'run')}, {b.max_active_runs or 10} at a time; a run takes "
        f"{span(e.run_duration_p50.ToTimedelta())} (p90 {span(e.run_duration_p90.ToTimedelta())}) "
        f"over {source} {counted(e.sample_size, 'finished run')}"
    )


def size_line(response: pb.CreateBackfillResponse) -> str:
    """The one-line size of a plan: runs to run, then the skipped slots apart."""
    s = response.summary
    more = "" if s.exact else " (at least: the count stopped short)"
    return f"{counted(s.create + s.reprocess, 'run')} planned, {s.already_exists + s.in_flight} skipped{more}"


def summary_dict(response: pb.CreateBackfillResponse) -> dict[str, object]:
    """The summary as plain JSON."""
    s = response.summary
    out: dict[str, object] = {
        "dag_id": response.backfill.dag_id,
        "to_run": s.create + s.reprocess,
        "create": s.create,
        "reprocess": s.reprocess,
        "skipped": s.already_exists + s.in_flight,
        "already_exists": s.already_exists,
        "in_flight": s.in_flight,
        "exact": s.exact,
    }
    for key in ("first_run", "last_run"):
        if s.HasField(key):
            run = s.first_run if key == "first_run" else s.last_run
            shown: dict[str, str | None] = {"logical_date": iso(run.logical_date), "run_id": run.run_id}
            if run.partition_key:
                shown["partition_key"] = run.partition_key
            out[key] = shown
    if response.backfill.HasField("estimate"):
        out["estimate"] = estimate_dict(response.backfill.estimate)
    return out


def summary(response: pb.CreateBackfillResponse) -> str:
    """The summary of a dry run, several lines for people."""
    s = response.summary
    lines = [f"dry run of {response.backfill.dag_id}: nothing written"]
    lines.append(f"  to run:   {s.create + s.reprocess:>7}  (create {s.create}, reprocess {s.reprocess})")
    lines.append(
        f"  skipped:  {s.already_exists + s.in_flight:>7}  (already exist {s.already_exists}, "
        f"in flight {s.in_flight})"
    )
    if s.HasField("first_run"):
        lines.append(
            f"  first run: {s.first_run.partition_key or iso(s.first_run.logical_date)}  {s.first_run.run_id}"
        )
        lines.append(
            f"  last run:  {s.last_run.partition_key or iso(s.last_run.logical_date)}  {s.last_run.run_id}"
        )
    if line := estimate_line(response.backfill):
        lines.append(f"  estimate: {line}")
    else:
        lines.append("  estimate: none (the DAG has no finished run to learn from)")
    if not s.exact:
        lines.append("  the count stopped short (planning budget or limits): the counts are lower bounds")
    lines.append("every slot: --all (table) or --output json")
    return "\n".join(lines)
