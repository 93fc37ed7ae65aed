"""Baseline: unmodified Airflow 3.3.2 runs its own backfill end to end with this harness.

This de-risks the sidecar's end-to-end tests: if this fails, the harness (environment,
api-server, scheduler, LocalExecutor, PostgreSQL clone) is broken, not the sidecar. The
backfill is created with Airflow's own ``airflow backfill create`` and run by a plain
``airflow scheduler``; the measured time is the reference the sidecar is compared to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from tests.support.airflow import run_airflow
from tests.support.dags import set_dags_paused
from tests.support.fixtures import AirflowDatabase
from tests.support.stack import airflow_stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

DAG_ID = "sidecar_e2e_three"
EXPECTED_RUNS = 5


def _backfill_run_states(db: AirflowDatabase) -> dict[str, int]:
    conn = psycopg2.connect(db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT state, count(*) FROM dag_run "
                "WHERE dag_id = %s AND backfill_id IS NOT NULL GROUP BY state",
                (DAG_ID,),
            )
            return {str(state): int(count) for state, count in cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_airflow_runs_its_own_backfill(
    airflow_db: AirflowDatabase, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    # Only the DAG under test may run: other test DAGs would add scheduled runs and noise.
    others = [dag_id for dag_id in airflow_db.dag_ids if dag_id != DAG_ID]
    set_dags_paused(airflow_db.env, True, others)
    started = time.monotonic()
    with airflow_stack(airflow_db.env, tmp_path / "logs") as stack:
        ready = time.monotonic()
        run_airflow(
            airflow_db.env,
            "backfill",
            "create",
            "--dag-id",
            DAG_ID,
            "--from-date",
            "2025-01-01",
            "--to-date",
            "2025-01-05",
        )
        created = time.monotonic()
        assert sum(_backfill_run_states(airflow_db).values()) == EXPECTED_RUNS

        def all_succeeded() -> bool:
            stack.assert_running()
            states = _backfill_run_states(airflow_db)
            assert not states.get("failed"), f"backfill runs failed: {states}; logs in {stack.log_dir}"
            return states.get("success") == EXPECTED_RUNS

        wait_until(
            all_succeeded,
            timeout=180,
            interval=1.0,
            message=lambda: (
                f"{EXPECTED_RUNS} successful backfill runs, have {_backfill_run_states(airflow_db)}"
                f"\n--- scheduler log ---\n{stack.scheduler.log_tail()}"
            ),
        )
        finished = time.monotonic()
    stopped = time.monotonic()
    timings = {
        "stack_start_s": round(ready - started, 1),
        "backfill_create_s": round(created - ready, 1),
        "runs_to_success_s": round(finished - created, 1),
        "stack_stop_s": round(stopped - finished, 1),
    }
    for key, value in timings.items():
        record_property(key, value)
    print(f"airflow baseline timings: {timings}")
