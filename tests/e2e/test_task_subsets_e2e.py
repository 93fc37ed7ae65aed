"""End to end: a task subset in the real Airflow 3.3.2 scheduler.

``first >> second >> third``, backfilled with ``--task-regex '^second$'``: ``second`` runs
although its upstream ``first`` is excluded, ``first`` and ``third`` never run and are not
re-added by the scheduler (their task instances stay ``removed``), and every run ends
``success`` in Airflow (what its UI shows). Windowed mode: the last run is written by a
later tick, with the recorded selection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.resilience.helpers import query, start_serve
from tests.support.authz import token
from tests.support.cli import SIDECAR, create_backfill
from tests.support.fixtures import AirflowDatabase
from tests.support.stack import airflow_stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

DAG_ID = "sidecar_e2e_three"


@pytest.mark.timeout(420)
def test_only_the_selected_tasks_run_and_the_runs_succeed(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    # The shim sends an Airflow-style token (role scheduler), as in production; the sidecar
    # itself runs without auth here, as in the resilience tests (auth is tested elsewhere).
    env = {**airflow_db.env, "SIDECAR_TICK_DEADLINE": "1.0", "SIDECAR_TOKEN": token("e2e", role="scheduler")}
    sidecar, target = start_serve(airflow_db.asyncpg_url, tmp_path / "logs" / "sidecar.log", env=env)
    env["SIDECAR_TARGET"] = target
    try:
        with airflow_stack(env, tmp_path / "logs", scheduler_command=[*SIDECAR, "scheduler"]):
            cli = create_backfill(
                env, target, DAG_ID, "2025-01-01", "2025-01-04", "--max-active-runs", "1",
                "--task-regex", "^second$", watch=True,
            )  # fmt: skip
            assert cli.returncode == 0, f"{cli.stderr}\n--- sidecar ---\n{sidecar.log_tail()}"
            # Let the scheduler examine the finished runs again: nothing is re-added or re-run.
            time.sleep(5)
    finally:
        sidecar.stop()

    runs = query(
        airflow_db,
        "SELECT r.run_id, r.state FROM dag_run r JOIN backfill_dag_run b ON b.dag_run_id = r.id "
        "WHERE r.dag_id = %s ORDER BY b.sort_ordinal",
        DAG_ID,
    )
    assert runs == [(f"backfill__2025-01-0{d}T00:00:00+00:00", "success") for d in range(1, 5)]
    tis = query(
        airflow_db,
        "SELECT ti.task_id, ti.state, ti.try_number, ti.start_date IS NULL, count(*) FROM task_instance ti"
        " JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id"
        " WHERE ti.dag_id = %s AND r.backfill_id IS NOT NULL"
        " GROUP BY ti.task_id, ti.state, ti.try_number, ti.start_date IS NULL ORDER BY ti.task_id",
        DAG_ID,
    )
    # The selected task ran once per run although its upstream was excluded; the others never
    # started (no try, no start date) and are still the one removed instance the sidecar wrote.
    assert tis == [
        ("first", "removed", 0, True, 4),
        ("second", "success", 1, False, 4),
        ("third", "removed", 0, True, 4),
    ]
    history = query(
        airflow_db,
        "SELECT count(*) FROM task_instance_history WHERE dag_id = %s AND task_id <> 'second'",
        DAG_ID,
    )
    assert history == [(0,)]
    backfills = query(airflow_db, "SELECT completed_at IS NOT NULL FROM backfill WHERE dag_id = %s", DAG_ID)
    assert backfills == [(True,)]
    # Windowed (max_active_runs 1 + look-ahead 2): the fourth run was written by a tick, which
    # read the recorded selection.
    assert "wrote slots 4..4" in sidecar.log_tail(1_000_000)
    shown = json.loads(cli.stdout.strip().splitlines()[-1])  # --watch: one JSON line per change
    assert shown["task_selection"]["selected_task_ids"] == ["second"]
