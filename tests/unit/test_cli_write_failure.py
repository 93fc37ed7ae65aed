"""The CLI shows why a backfill's runs are not being written (set aside, or retrying)."""

from __future__ import annotations

import json

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.cli._client import print_backfills
from sidecar.cli._progress import progress_line


def backfill(set_aside: bool) -> pb.Backfill:
    b = pb.Backfill(id=7, dag_id="etl", state=pb.Backfill.STATE_ACTIVE)
    b.write_failure.reason = "data_exception"
    b.write_failure.message = "the metadata database refused its runs (SQLSTATE 22P05); see id abc"
    b.write_failure.attempts = 3
    b.write_failure.set_aside = set_aside
    return b


def test_table_state_and_reason_line(capsys: pytest.CaptureFixture[str]) -> None:
    print_backfills([backfill(True), pb.Backfill(id=8, dag_id="ok", state=pb.Backfill.STATE_ACTIVE)], "table")
    out = capsys.readouterr().out.splitlines()
    assert "active, set aside" in out[2] and out[3].split()[2] == "active" and "set aside" not in out[3]
    assert out[-1] == (
        "backfill 7 set aside (unpause to retry, or cancel): data_exception: "
        "the metadata database refused its runs (SQLSTATE 22P05); see id abc"
    )


def test_retrying_and_watch_line(capsys: pytest.CaptureFixture[str]) -> None:
    print_backfills([backfill(False)], "table")
    out = capsys.readouterr().out
    assert "active, retrying (3)" in out and "backfill 7 retrying (3 attempts): data_exception" in out
    assert progress_line(backfill(True)).endswith("active, set aside")


def test_json_carries_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    print_backfills([backfill(True)], "json")
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["write_failure"]["set_aside"] is True and doc["write_failure"]["attempts"] == 3


def test_a_pause_for_failed_runs_shows_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    reason = "3 failed runs reached max_failed_runs 3"
    paused = pb.Backfill(
        id=9, dag_id="etl", state=pb.Backfill.STATE_PAUSED, is_paused=True, pause_reason=reason
    )
    print_backfills([paused, pb.Backfill(id=10, dag_id="ok", state=pb.Backfill.STATE_PAUSED)], "table")
    out = capsys.readouterr().out.splitlines()
    assert f"paused: {reason}" in out[2] and "paused" in out[3] and "reached" not in out[3]
    assert out[-1] == f"backfill 9 paused: {reason} (unpause to go on, or cancel)"
    assert progress_line(paused).endswith(f"paused: {reason}")


@pytest.mark.parametrize(
    ("state", "shown"), [(pb.Backfill.STATE_ACTIVE, True), (pb.Backfill.STATE_PAUSED, False)]
)
def test_the_eta_is_shown_only_while_the_backfill_goes_on(state: int, shown: bool) -> None:
    """Paused (by a user or by --max-failed-runs) it starts no run: no time left is promised."""
    b = pb.Backfill(id=8, dag_id="etl", state=state)
    b.estimate.runs_remaining = 9
    b.estimate.remaining_p50.FromSeconds(125)
    assert ("eta ~2m 05s" in progress_line(b)) is shown
