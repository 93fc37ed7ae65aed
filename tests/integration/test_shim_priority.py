"""The shim's fairness honours priorities and a DAG's cap: real rows, Airflow 3.3.2's own scheduler code.

Three concurrent backfills of one DAG, every run queued (eager); Airflow's own create still
refuses while they are open. A probe subprocess runs
``SidecarSchedulerJobRunner._start_queued_dagruns`` once (Airflow's real scheduler method
with the shim's choice of runs), and the test reads which runs started:

- with a cap of 3 running backfill runs, the backfill of priority 10 takes as many as its
  ``max_active_runs`` allows (2), the oldest of the others the last (round robin, the
  default, would start the first run of each);
- with no priority but a cap of 4 across the DAG's backfills, four start, round robin;
- with neither, Airflow's own choice: each backfill up to its ``max_active_runs``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg2.extensions
import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, Controls, Mode
from tests.support.airflow import run_probe
from tests.support.fixtures import AirflowDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

THREE = "sidecar_e2e_three"
PROBE = Path(__file__).resolve().parent / "shim_start_probe.py"


def probe(db: AirflowDatabase, options: dict[str, object]) -> dict[str, object]:
    answer: dict[str, object] = run_probe(PROBE, options, db.env)
    return answer


def start_once(db: AirflowDatabase, cap: int | None) -> list[tuple[int, int]]:
    running = probe(db, {"cap": cap})["running"]
    assert isinstance(running, list)
    return [(b, o) for b, o in running]


async def backfill(engine: BackfillEngine, first: int, **controls: object) -> int:
    view = await engine.create(
        BackfillSpec(
            THREE,
            dt.datetime(2025, 1, first, tzinfo=dt.UTC),
            dt.datetime(2025, 1, first + 4, tzinfo=dt.UTC),
            max_active_runs=2,
            mode=Mode.EAGER,
            controls=Controls(concurrent=True, **controls),  # type: ignore[arg-type]
        )
    )
    assert isinstance(view, BackfillView)
    return view.id


@pytest.mark.timeout(600)
async def test_priorities_and_a_dags_cap_choose_the_runs_that_start(
    engine: BackfillEngine, sql: psycopg2.extensions.cursor, clean_db: AirflowDatabase
) -> None:
    sql.execute("UPDATE dag SET is_paused = false WHERE dag_id = %s", (THREE,))
    a = await backfill(engine, 1)
    b = await backfill(engine, 11, priority=10)
    c = await backfill(engine, 21)
    # Airflow's own create still sees an open backfill and refuses, as it does today.
    assert probe(clean_db, {"airflow_create": THREE}) == {"airflow_create": "AlreadyRunningBackfill"}

    # B first, up to its max_active_runs (2); then the oldest of the equals.
    assert start_once(clean_db, cap=3) == [(a, 1), (b, 1), (b, 2)]

    def requeue(priority: int | None, dag_cap: int | None) -> None:
        sql.execute("UPDATE dag_run SET state = 'queued', start_date = NULL WHERE state = 'running'")
        sql.execute(
            "UPDATE airflow_sidecar.sidecar_backfill SET priority = %s, dag_max_active_runs = %s",
            (priority, dag_cap),
        )

    requeue(None, 4)
    assert start_once(clean_db, cap=None) == [(a, 1), (a, 2), (b, 1), (c, 1)]

    requeue(None, None)  # Airflow's own choice: each backfill up to its max_active_runs (2)
    assert start_once(clean_db, cap=None) == [(a, 1), (a, 2), (b, 1), (b, 2), (c, 1), (c, 2)]
