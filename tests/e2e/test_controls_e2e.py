"""End to end, the backfill controls in the real Airflow 3.3.2 scheduler with the shim (docs/controls.md).

One sidecar, the real scheduler with the shim (LocalExecutor) and Airflow's api-server:

- two concurrent backfills of one DAG over ranges that do not overlap, created with the
  CLI, run side by side to success (a third, overlapping one is refused, naming the
  backfill and the dates);
- a backfill of a DAG whose task always fails, with ``--max-failed-runs 2``, is paused by
  the sidecar once two of its runs failed: the rest of its runs never start, and the
  reason shows in the CLI's ``get``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.resilience.helpers import query, start_serve
from tests.support.cli import SIDECAR, create_backfill, sidecar_backfill
from tests.support.fixtures import AirflowDatabase
from tests.support.stack import airflow_stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

THREE = "sidecar_e2e_three"
FAILS = "sidecar_e2e_fails"
SHIM = [*SIDECAR, "scheduler"]


def create(env: dict[str, str], target: str, dag_id: str, first: str, last: str, *extra: str) -> int:
    done = create_backfill(env, target, dag_id, first, last, *extra)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)[0]["id"])


@pytest.mark.timeout(600)
def test_concurrent_backfills_and_a_failed_runs_limit_in_the_real_scheduler(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    sidecar, target = start_serve(airflow_db.asyncpg_url, tmp_path / "sidecar.log", tick_interval=3600)
    env = {**airflow_db.env, "SIDECAR_TARGET": target, "SIDECAR_TICK_DEADLINE": "2"}
    try:
        with airflow_stack(env, tmp_path / "logs", scheduler_command=SHIM) as stack:
            options = ("--max-active-runs", "2", "--concurrent")
            first = create(env, target, THREE, "2025-01-01", "2025-01-03", *options)
            second = create(env, target, THREE, "2025-01-04", "2025-01-06", *options, "--priority", "5")
            overlapping = create_backfill(env, target, THREE, "2025-01-03", "2025-01-04", "--concurrent")
            assert overlapping.returncode != 0
            assert f"overlaps backfill {first} " in overlapping.stderr
            assert "from 2025-01-03T00:00:00+00:00 to 2025-01-03T00:00:00+00:00" in overlapping.stderr

            failing = create(
                env,
                target,
                FAILS,
                "2025-01-01",
                "2025-01-08",
                "--max-active-runs",
                "1",
                "--max-failed-runs",
                "2",
            )
            wait_until(
                lambda: (
                    query(airflow_db, "SELECT count(*) FROM backfill WHERE completed_at IS NULL") == [(1,)]
                ),
                420,
                1.0,
                lambda: f"both backfills of {THREE} to complete\n{stack.scheduler.log_tail()}",
            )
            wait_until(
                lambda: (
                    query(airflow_db, "SELECT is_paused FROM backfill WHERE id = %s", failing) == [(True,)]
                ),
                120,
                1.0,
                lambda: f"the failing backfill to be paused\n{sidecar.log_tail()}",
            )
            shown = sidecar_backfill(env, target, "get", f"backfills/{failing}", "--output", "json")
            table = sidecar_backfill(env, target, "get", f"backfills/{failing}")
    finally:
        sidecar.stop()

    runs = query(
        airflow_db,
        "SELECT backfill_id, state, start_date, end_date FROM dag_run WHERE dag_id = %s"
        " AND backfill_id IS NOT NULL ORDER BY logical_date",
        THREE,
    )
    assert [(b, s) for b, s, _, _ in runs] == [(first, "success")] * 3 + [(second, "success")] * 3
    # Side by side: a run of each backfill was running at the same time.
    assert any(a[2] < b[3] and b[2] < a[3] for a in runs if a[0] == first for b in runs if b[0] == second), (
        runs
    )

    # The failing backfill: paused after its second failed run; the rest never started.
    states = [s for (s,) in query(airflow_db, "SELECT state FROM dag_run WHERE backfill_id = %s", failing)]
    assert states.count("failed") == 2 and "running" not in states and "success" not in states, states
    assert shown.returncode == 0, shown.stderr
    (got,) = json.loads(shown.stdout)
    assert got["state"] == "STATE_PAUSED"
    assert got["pause_reason"] == "2 failed runs reached max_failed_runs 2"
    assert got["max_failed_runs"] == 2
    assert f"backfill {failing} paused: 2 failed runs reached max_failed_runs 2" in table.stdout
