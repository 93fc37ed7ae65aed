"""The ``airflow-sidecar`` command as a user runs it: a real ``serve`` process and CLI subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2.extensions
import pytest

from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import start_sidecar
from tests.support.waiting import wait_until

THREE = "sidecar_e2e_three"


@pytest.fixture
def target(clean_db: AirflowDatabase, tmp_path: Path) -> Iterator[str]:
    process, address = start_sidecar(clean_db.asyncpg_url, tmp_path)
    try:
        yield address
    finally:
        process.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_dry_run_json_lists_planned_runs_and_decisions(target: str, sql: psycopg2.extensions.cursor) -> None:
    sql.execute(
        "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status)"
        " VALUES (%s, 'manual__x', '2025-01-02T00:00:00+00:00', '2025-01-02T00:00:00+00:00', 'success', 'manual',"
        " 0, 'not_started')",
        (THREE,),
    )
    result = cli(
        "backfill",
        "create",
        "--target",
        target,
        "--dag-id",
        THREE,
        "--from-date",
        "2025-01-01",
        "--to-date",
        "2025-01-03",
        "--dry-run",
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [r["logical_date"] for r in runs] == [f"2025-01-0{d}T00:00:00+00:00" for d in (1, 2, 3)]
    assert runs[0] == {
        "sort_ordinal": 1,
        "logical_date": "2025-01-01T00:00:00+00:00",
        "data_interval_start": "2025-01-01T00:00:00+00:00",
        "data_interval_end": "2025-01-01T00:00:00+00:00",
        "run_after": "2025-01-01T00:00:00+00:00",
        "run_id": "backfill__2025-01-01T00:00:00+00:00",
        "action": "create",
    }
    assert runs[1]["action"] == "skip: already exists"
    assert runs[1]["run_id"] == "manual__x"
    sql.execute("SELECT count(*) FROM backfill")
    assert sql.fetchone() == (0,)


def test_partition_keys_and_ordering_in_a_dry_run(target: str) -> None:
    """Keys as the range, newest first; the table and the JSON list partition keys."""
    args = ["backfill", "create", "--target", target, "--dag-id", "sidecar_it_partitioned"]
    args += ["--from-partition-key", "2025-01-01", "--to-date", "2025-01-03", "--ordering", "newest-first"]
    result = cli(*args, "--dry-run", "--output", "json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(r["partition_key"], r["partition_date"]) for r in runs] == [
        ("2025-01-03", "2025-01-03T05:00:00+00:00"),
        ("2025-01-02", "2025-01-02T05:00:00+00:00"),
        ("2025-01-01", "2025-01-01T05:00:00+00:00"),
    ]
    assert runs[0]["logical_date"] is None and runs[0]["run_id"].startswith(
        "backfill__2025-01-03T05:00:00+00:00__2025-01-03__"
    )
    table = cli(*args, "--dry-run")
    assert table.returncode == 0, table.stderr
    header, _, first, *_ = table.stdout.splitlines()
    assert header.split()[:3] == ["ordinal", "partition_key", "partition_date"]
    assert first.split()[:2] == ["1", "2025-01-03"]


def test_create_get_list_pause_cancel(target: str) -> None:
    created = cli(
        "backfill",
        "--target",
        target,
        "create",
        "--dag-id",
        THREE,
        "--from-date",
        "2025-01-01",
        "--to-date",
        "2025-01-04T00:00:00+00:00",
        "--max-active-runs",
        "1",
        "--output",
        "json",
    )
    assert created.returncode == 0, created.stderr
    (backfill,) = json.loads(created.stdout)
    assert backfill["state"] == "STATE_ACTIVE"
    backfill_id = str(backfill["id"])
    table = cli("backfill", "--target", target, "get", backfill_id)
    assert table.returncode == 0
    assert THREE in table.stdout and "active" in table.stdout
    listing = json.loads(cli("backfill", "--target", target, "list", "--dag-id", THREE, "-o", "json").stdout)
    assert [b["id"] for b in listing] == [backfill["id"]]
    runs = json.loads(cli("backfill", "--target", target, "runs", backfill_id, "-o", "json").stdout)
    assert [r["action"] for r in runs] == ["create", "create", "create", "pending"]
    paused = json.loads(cli("backfill", "--target", target, "pause", backfill_id, "-o", "json").stdout)
    assert paused[0]["is_paused"] is True
    cancelled = json.loads(
        cli("backfill", "--target", target, "cancel", f"backfills/{backfill_id}", "-o", "json").stdout
    )
    assert cancelled[0]["state"] == "STATE_CANCELLED"


def test_a_plan_counted_in_the_background_shows_as_a_lower_bound_until_counted(target: str) -> None:
    """03:00 Amsterdam over two years: 731 slots stepped after creation (test_planned_counting)."""
    created = cli(
        "backfill", "--target", target, "create", "--dag-id", "sidecar_it_interval",
        "--from-date", "2023-01-01", "--to-date", "2025-01-01", "--max-active-runs", "1",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    # The create answers before its count starts: always still counting.
    header, _, row, counting = created.stdout.splitlines()
    backfill_id = row.split()[0]
    done = row.split()[header.split().index("done")]
    assert done.startswith("0/") and done.endswith("+"), row
    assert counting.startswith(f"backfill {backfill_id}: its plan is still being counted: ")

    def landed() -> dict[str, Any] | None:
        got = cli("backfill", "--target", target, "get", backfill_id, "-o", "json")
        assert got.returncode == 0, got.stderr
        (backfill,) = json.loads(got.stdout)
        return None if backfill["progress"]["planned_is_counting"] else backfill

    counted = wait_until(landed, 120, 0.2, "the background count")
    assert counted["progress"]["planned"] == "731"
    header, _, row = cli("backfill", "--target", target, "get", backfill_id).stdout.splitlines()
    assert row.split()[header.split().index("done")] == "0/731"  # exact, and no line about counting


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--dag-id", "nope"], 1, "NOT_FOUND: Could not find dag nope"),
        (["--dag-id", THREE, "--max-active-runs", "0"], 1, "INVALID_ARGUMENT: max_active_runs must be"),
        (["--dag-id", THREE, "--dag-run-conf", "[1]"], 2, "--dag-run-conf must be a JSON object"),
        (["--dag-id", THREE, "--from-date", "yesterday"], 2, "--from-date: 'yesterday' is not an ISO 8601"),
        (["--dag-id", THREE, "--to-partition-key", "2025-01-03"], 2, "give --to-date or --to-partition-key"),
        (
            ["--dag-id", THREE, "--from-partition-key", "2025-01-01", "--from-date", "2025-01-01"],
            2,
            "give --from-date or --from-partition-key (exactly one)",
        ),
        (
            ["--dag-id", THREE, "--run-backwards", "", "--ordering", "oldest-first"],
            1,
            "INVALID_ARGUMENT: ordering OLDEST_FIRST contradicts run_backwards",
        ),
    ],
)
def test_errors_are_one_line_and_non_zero(target: str, args: list[str], code: int, message: str) -> None:
    base = {"--from-date": "2025-01-01", "--to-date": "2025-01-03"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [item for pair in base.items() for item in pair if item]  # "" : a flag without a value
    result = cli("backfill", "--target", target, "create", *flat)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_unreachable_sidecar_is_one_line() -> None:
    result = cli("backfill", "--target", f"127.0.0.1:{free_port()}", "--timeout", "2", "list")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "UNAVAILABLE" in result.stderr


def test_serve_exits_non_zero_with_one_line_on_a_non_airflow_database(tmp_path: Path) -> None:
    result = cli(
        "serve",
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--no-auth",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("airflow-sidecar: error: database check failed")
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
