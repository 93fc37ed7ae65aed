"""The CLI while a backfill's plan is still being counted: the planned count is a lower bound.

Right after a large windowed create the sidecar counts the plan in the background and
``progress.planned`` is the slots written so far (``planned_is_counting``). Every output says
so (``12+``, "plan still being counted") and no ETA is made from it; once counted, the exact
numbers show as before.
"""

from __future__ import annotations

import io
import json

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.cli._client import print_backfills
from sidecar.cli._plans import estimate_line
from sidecar.cli._progress import follow, progress_line
from sidecar.estimate_json import estimate_dict


def backfill(counting: bool) -> pb.Backfill:
    """Backfill 7 with 12 runs written: of a plan still counted, or of exactly 100,000."""
    b = pb.Backfill(id=7, dag_id="etl", state=pb.Backfill.STATE_ACTIVE, max_active_runs=10)
    p = b.progress
    p.planned, p.written, p.queued, p.succeeded, p.planned_is_counting = (
        12 if counting else 100_000,
        12,
        10,
        2,
        counting,
    )
    e = b.estimate
    e.basis, e.sample_size, e.plan_is_counting = "history", 3, counting
    e.run_duration_p50.FromSeconds(60)
    e.run_duration_p90.FromSeconds(90)
    if not counting:
        e.runs_remaining = 99_998
        e.remaining_p50.FromSeconds(99_998 * 6)
        e.remaining_p90.FromSeconds(99_998 * 9)
    return b


def test_the_progress_line_marks_the_total_and_gives_no_eta() -> None:
    line = progress_line(backfill(True))
    assert line.startswith("backfill 7: 2/12+ runs (plan still being counted)")
    assert "written=12/12+" in line and line.endswith("eta once the plan is counted")
    exact = progress_line(backfill(False))
    assert exact.startswith("backfill 7: 2/100000 runs  ") and "+" not in exact
    assert exact.endswith("eta ~6d 22h")


def test_the_table_marks_done_and_says_the_plan_is_counted(capsys: pytest.CaptureFixture[str]) -> None:
    print_backfills([backfill(True)], "table")
    out = capsys.readouterr().out.splitlines()
    assert "2/12+" in out[2].split()  # the done column
    assert out[3] == (
        "backfill 7: its plan is still being counted: 12+ planned (the slots written so far); "
        "the exact number follows"
    )
    print_backfills([backfill(False)], "table")
    out = capsys.readouterr().out.splitlines()
    assert "2/100000" in out[2].split() and len(out) == 3


def test_json_carries_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    print_backfills([backfill(True), backfill(False)], "json")
    counting, counted = json.loads(capsys.readouterr().out)
    assert counting["progress"]["planned_is_counting"] is True
    assert counting["estimate"]["plan_is_counting"] is True
    # Not known yet is null, not 0 and not left out: as in the dry-run summary's estimate.
    unknown = ("runs_remaining", "remaining_p50", "remaining_p90")
    assert [counting["estimate"][k] for k in unknown] == [None] * 3
    summary = estimate_dict(backfill(True).estimate)
    assert [summary[k] for k in ("runs_remaining", "remaining_p50_seconds", "remaining_p90_seconds")] == [
        None
    ] * 3
    assert counted["progress"]["planned_is_counting"] is False
    assert counted["estimate"]["plan_is_counting"] is False
    assert [counted["estimate"][k] for k in unknown] == ["99998", f"{99_998 * 6}s", f"{99_998 * 9}s"]


def test_the_estimate_line_gives_a_run_s_duration_only() -> None:
    line = estimate_line(backfill(True))
    assert line == (
        "a run takes 1m 00s (p90 1m 30s) over the DAG's latest 3 finished runs; "
        "the time left follows once the plan is counted"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watching_shows_the_count_landing(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = io.StringIO()
    follow([backfill(True), backfill(False)], plain)
    first, second = plain.getvalue().splitlines()
    assert "2/12+ runs (plan still being counted)" in first and "2/100000 runs" in second
    monkeypatch.setenv("COLUMNS", "200")  # the bar's line uncut
    bar = Terminal()
    last = follow([backfill(True)], bar)
    assert last.progress.planned_is_counting
    shown = bar.getvalue()
    assert "plan still being counted (12+ runs so far)" in shown
    assert "2/?" in shown  # no total, so no ETA, until the count lands
