"""Crash safety: ``kill -9`` of ``airflow-sidecar serve`` while it writes a 20,000-run backfill.

The sidecar is killed at random points of an eager creation, restarted, killed again,
and finally a second replica takes the work over from a replica killed mid-batch. In
the end exactly the planned runs exist, each with its task instance, nothing twice, and
the backfill completes once its runs succeed.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from tests.resilience.helpers import (
    FROM_20K,
    ONE_TASK_DAG,
    TO_20K,
    assert_backfill_intact,
    completed,
    create_in_background,
    create_request,
    phase_of,
    query,
    runs_of,
    start_serve,
    tick,
    wait_for_runs,
)
from tests.support.fixtures import AirflowDatabase
from tests.support.processes import AirflowProcess
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

PLANNED = 20_000


def _kill_after(db: AirflowDatabase, process: AirflowProcess, more_than: int, errors: list[str]) -> int:
    """SIGKILL the sidecar's process group inside a batch after ``more_than`` runs; return the count."""
    wait_for_runs(db, more_than, errors, process.running, process.log_tail)
    assert process.popen is not None
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(10)
    process.stop()
    return runs_of(db)


@pytest.mark.timeout(240)
def test_kill_9_during_a_20000_run_creation_loses_and_duplicates_nothing(
    module_db: AirflowDatabase, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("SIDECAR_RESILIENCE_SEED", "6")))
    kills: list[int] = []
    errors: list[str] = []
    processes: list[AirflowProcess] = []
    try:
        process, target = start_serve(module_db.asyncpg_url, tmp_path / "sidecar-0.log")
        processes.append(process)
        thread = create_in_background(
            target, create_request(ONE_TASK_DAG, FROM_20K, TO_20K, mode=pb.MODE_EAGER), errors
        )
        # Killed during the CreateBackfill call itself, then three times while ticks resume the
        # eager creation; each kill at a random point, strictly later than the one before.
        for attempt in range(4):
            seen = kills[-1] if kills else 0
            kills.append(_kill_after(module_db, process, seen + rng.randint(1, 3_000), errors))
            if attempt == 0:
                thread.join(30)
            if attempt == 3:
                # Paused (as Airflow's own pause does) while the two replicas start: else the first
                # one up may write the rest of the plan (a few seconds now) before the other is up.
                query(module_db, "UPDATE backfill SET is_paused = true WHERE dag_id = %s", ONE_TASK_DAG)
            process, target = start_serve(module_db.asyncpg_url, tmp_path / f"sidecar-{attempt + 1}.log")
            processes.append(process)
        # Two replicas on one database: the one doing the work dies mid-batch, the other takes over.
        other, other_target = start_serve(module_db.asyncpg_url, tmp_path / "sidecar-replica.log")
        processes.append(other)
        query(module_db, "UPDATE backfill SET is_paused = false WHERE dag_id = %s", ONE_TASK_DAG)
        kills.append(_kill_after(module_db, process, kills[-1] + rng.randint(1, 2_000), errors))
        wait_until(
            lambda: phase_of(module_db) == "materialized",
            180,
            0.2,
            lambda: f"the replica to finish the backfill\n{other.log_tail()}",
        )
        figures = assert_backfill_intact(module_db, ONE_TASK_DAG, PLANNED)
        # The backfill completes once its runs are done (marked by SQL: no tasks run here).
        query(module_db, "UPDATE dag_run SET state = 'success' WHERE dag_id = %s", ONE_TASK_DAG)
        wait_until(lambda: tick(other_target) and completed(module_db), 60, 0.2, "the backfill to complete")
    finally:
        for p in processes:
            p.stop()
    print(f"kill -9 faults injected: {len(kills)} at run counts {kills}; checked {figures}")
    assert len(kills) == 5 and kills[0] < PLANNED
