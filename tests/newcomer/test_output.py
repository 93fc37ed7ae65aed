"""Output a newcomer can read: dry-run summaries, a real progress bar, lists that follow pages.

The dry run and the lists run as a user runs them (a real ``serve``, the CLI as a process,
a real Airflow 3.3.2 schema); the progress display is checked in-process on a fake terminal
and on a pipe.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.cli._client import collect
from sidecar.cli._progress import follow
from tests.newcomer.snapshots import assert_snapshot, cli, transcript
from tests.support.fixtures import AirflowDatabase
from tests.support.postgres import pg_connect
from tests.support.processes import start_sidecar

DAG = "sidecar_e2e_three"  # @daily, UTC
YEAR = ("--from-date", "2024-01-01", "--to-date", "2024-12-31")


@pytest.fixture(scope="module")
def target(airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pg_connect(airflow_db.name) as conn, conn.cursor() as cur:
        for day, state in (("2024-02-01", "success"), ("2024-02-02", "running")):
            cur.execute(
                "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number,"
                " span_status) VALUES (%s, %s, %s, %s, %s, 'manual', 0, 'not_started')",
                (DAG, f"manual__{day}", f"{day}T00:00:00+00:00", f"{day}T00:00:00+00:00", state),
            )
    process, address = start_sidecar(airflow_db.asyncpg_url, tmp_path_factory.mktemp("output"))
    try:
        yield address
    finally:
        process.stop()


def test_a_large_dry_run_is_a_summary_that_does_not_count_skipped_runs(target: str) -> None:
    result = cli("backfill", "create", "--target", target, "--dag-id", DAG, *YEAR, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) < 12
    assert "to run:       364  (create 364, reprocess 0)" in result.stdout
    assert "skipped:        2  (already exist 1, in flight 1)" in result.stdout
    assert_snapshot("dry_run_summary", transcript(result))


def test_a_summary_dry_run_counts_the_whole_plan_and_lists_nothing(target: str) -> None:
    result = cli("backfill", "create", "--target", target, "--dag-id", DAG, *YEAR, "--dry-run", "--summary")
    assert result.returncode == 0, result.stderr
    assert "to run:       364  (create 364, reprocess 0)" in result.stdout
    assert "estimate: " in result.stdout
    as_json = cli(
        "backfill", "create", "--target", target, "--dag-id", DAG, *YEAR, "--dry-run", "--summary", "-o", "json"
    )  # fmt: skip
    summary = json.loads(as_json.stdout)
    assert (summary["to_run"], summary["skipped"], summary["exact"]) == (364, 2, True)
    assert summary["first_run"]["logical_date"] == "2024-01-01T00:00:00+00:00"
    alone = cli("backfill", "create", "--target", target, "--dag-id", DAG, *YEAR, "--summary")
    assert alone.returncode == 2 and "--summary works with --dry-run only" in alone.stderr


def test_a_dry_run_lists_every_slot_with_all_or_json(target: str) -> None:
    table = cli("backfill", "create", "--target", target, "--dag-id", DAG, *YEAR, "--dry-run", "--all")
    assert table.returncode == 0, table.stderr
    assert len(table.stdout.splitlines()) == 2 + 366
    assert table.stderr.strip() == "364 runs planned, 2 skipped"
    listed = cli("backfill", "create", "--target", target, "--dag-id", DAG, *YEAR, "--dry-run", "-o", "json")
    assert len(json.loads(listed.stdout)) == 366


def test_a_small_dry_run_stays_a_table(target: str) -> None:
    result = cli(
        "backfill", "create", "--target", target, "--dag-id", DAG, "--from-date", "2024-02-01",
        "--to-date", "2024-02-05", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2 + 5
    assert result.stderr.strip() == "3 runs planned, 2 skipped"


def test_runs_follow_pages_and_say_when_cut(target: str) -> None:
    created = cli(
        "backfill", "create", "--target", target, "--dag-id", DAG, "--from-date", "2023-01-01",
        "--to-date", "2023-04-30", "--mode", "eager", "-o", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    backfill_id = json.loads(created.stdout)[0]["id"]
    cut = cli("backfill", "runs", str(backfill_id), "--target", target, "--limit", "50")
    assert cut.returncode == 0, cut.stderr
    assert len(cut.stdout.splitlines()) == 2 + 50
    assert cut.stderr.strip() == "showing the first 50 runs; more exist: raise --limit or use --all"
    every = cli("backfill", "runs", str(backfill_id), "--target", target, "--all", "-o", "json")
    assert len(json.loads(every.stdout)) == 120
    assert every.stderr == ""  # one page: nothing to report
    listing = cli("backfill", "list", "--target", target, "--limit", "1")
    assert listing.returncode == 0 and listing.stderr == ""  # one backfill: nothing cut


def test_collect_follows_every_page_with_a_progress_line(capsys: pytest.CaptureFixture[str]) -> None:
    data = list(range(2500))

    def fetch(size: int, token: str) -> tuple[list[int], str]:
        start = int(token or 0)
        end = min(start + size, len(data))
        return data[start:end], (str(end) if end < len(data) else "")

    assert collect(fetch, None, 1000, "runs") == data
    assert capsys.readouterr().err.splitlines() == [
        "fetched 1000 runs so far...",
        "fetched 2000 runs so far...",
    ]
    assert collect(fetch, 1500, 1000, "runs") == data[:1500]
    assert "more exist" in capsys.readouterr().err


def _updates() -> list[pb.Backfill]:
    out = []
    for done in range(0, 5):
        b = pb.Backfill(id=7, state=pb.Backfill.STATE_ACTIVE if done < 4 else pb.Backfill.STATE_COMPLETED)
        b.progress.planned, b.progress.skipped, b.progress.succeeded = 5, 1, done
        out.append(b)
    return [*out, out[-1]]


def test_progress_is_plain_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    last = follow(_updates(), stream)
    assert last.state == pb.Backfill.STATE_COMPLETED
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 5  # a repeated update prints nothing
    assert lines[-1].startswith("backfill 7: 4/4 runs  succeeded=4")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_bar_with_elapsed_time_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    stream = _Terminal()
    follow(_updates(), stream)
    text = stream.getvalue()
    assert "4/4" in text and "eta" in text
    assert "0:00:00" in text  # rich's elapsed/remaining columns
    assert "━" in text  # the bar itself
