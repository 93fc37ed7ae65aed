"""A dry run as a newcomer reads it: a summary of a large plan, the full list on request.

A plan of two years of an hourly DAG is 17,520 slots; printing them all buries what matters.
Above :data:`SUMMARY_ABOVE` slots the table output is a summary: the runs to run (create,
reprocess) apart from the slots skipped (already exists, in flight), which are not planned
runs, and the first and last run. ``--all`` or ``--output json`` lists every slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: Plans with more slots than this are summarised in table output.
SUMMARY_ABOVE = 50
#: Dispositions of slots that become runs, and of slots that are skipped.
TO_RUN = ("create", "reprocess")
SKIPPED = ("skip: already exists", "skip: in flight")


def plan_counts(runs: Sequence[Mapping[str, Any]]) -> Counter[str]:
    """Slots by disposition (``create``, ``reprocess``, ``skip: already exists``, ``skip: in flight``)."""
    return Counter(str(r["action"]) for r in runs)


def size_line(runs: Sequence[Mapping[str, Any]], truncated: bool) -> str:
    """The one-line size of a plan: runs to run, then the skipped slots apart."""
    by = plan_counts(runs)
    to_run = sum(by[a] for a in TO_RUN)
    skipped = sum(by[a] for a in SKIPPED)
    more = " (the listed plan is cut: counts cover the listed slots)" if truncated else ""
    return f"{to_run} runs planned, {skipped} skipped{more}"


def summary(dag_id: str, runs: Sequence[Mapping[str, Any]], truncated: bool) -> str:
    """The summary of a dry run, several lines for people."""
    by = plan_counts(runs)
    to_run = [r for r in runs if r["action"] in TO_RUN]
    lines = [f"dry run of {dag_id}: nothing written"]
    lines.append(
        f"  to run:   {sum(by[a] for a in TO_RUN):>7}  (create {by['create']}, reprocess {by['reprocess']})"
    )
    lines.append(
        f"  skipped:  {sum(by[a] for a in SKIPPED):>7}  (already exist {by['skip: already exists']}, "
        f"in flight {by['skip: in flight']})"
    )
    others = sum(n for a, n in by.items() if a not in TO_RUN + SKIPPED)
    if others:
        lines.append(f"  other:    {others:>7}")
    if to_run:
        first, last = to_run[0], to_run[-1]
        lines.append(f"  first run: {first.get('partition_key') or first['logical_date']}  {first['run_id']}")
        lines.append(f"  last run:  {last.get('partition_key') or last['logical_date']}  {last['run_id']}")
    if truncated:
        lines.append(f"  the sidecar listed the first {len(runs)} slots only; counts cover those")
    lines.append("every slot: --all (table) or --output json")
    return "\n".join(lines)
