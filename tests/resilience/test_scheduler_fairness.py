"""Fairness, high availability and cancel with the real Airflow 3.3.2 scheduler.

Twenty-five regular runs hold the scheduler's attention (their tasks wait on a pool with
no slots, so they stay running). Unmodified, Airflow 3.3.2 then never examines a backfill's
running runs again (apache/airflow#58554). Here one scheduler with the shim and two sidecar
replicas run two backfills of different DAGs side by side under a global cap of running
backfill runs; then one replica is killed and a second scheduler with the shim joins: the
shims fail over to the surviving replica. Both
backfills complete, the regular runs are untouched, the cap holds, nothing is written twice.
Then a cancelled backfill's run, cleared afterwards as Airflow's "clear" does, still runs
(apache/airflow#72337).

``SIDECAR_SHIM_FAIRNESS=off pytest tests/resilience/test_scheduler_fairness.py`` runs the same
scenario with Airflow's own choice of runs: it fails, waiting for the first backfill to
progress (the starvation this test guards against).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.resilience.helpers import completed, create_request, query, start_serve
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import AirflowProcess
from tests.support.stack import AirflowStack, airflow_stack, start_scheduler
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

# Regular runs whose tasks wait on the empty pool, so they stay running: 16 (the DAG's
# max_active_runs) of one DAG and 9 of another.
REGULAR = {"sidecar_e2e_three": 16, "sidecar_it_interval": 9}
FIRST = "sidecar_it_params"  # EmptyOperator: Airflow finishes it without an executor
SECOND = "sidecar_it_depends_on_past"
CAP = 3
SHIM = [sys.executable, "-m", "sidecar", "scheduler"]


def _trigger(stack: AirflowStack, dag_id: str) -> None:
    request = urllib.request.Request(
        f"{stack.api_url}/api/v2/dags/{dag_id}/dagRuns",
        data=json.dumps({"logical_date": None}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def _create(target: str, request: pb.CreateBackfillRequest) -> pb.Backfill:
    with grpc.insecure_channel(target) as channel:
        backfill: pb.Backfill = (
            backfill_pb2_grpc.BackfillServiceStub(channel).CreateBackfill(request, timeout=60).backfill
        )
        return backfill


def _count(db: AirflowDatabase, where: str, *params: object) -> int:
    return int(query(db, f"SELECT count(*) FROM dag_run WHERE {where}", *params)[0][0])  # type: ignore[call-overload]


@pytest.mark.timeout(420)
def test_backfills_progress_beside_25_running_regular_runs_across_replicas_and_schedulers(
    module_db: AirflowDatabase, tmp_path: Path
) -> None:
    query(module_db, "UPDATE slot_pool SET slots = 0 WHERE pool = 'default_pool'")
    replica_a, target_a = start_serve(module_db.asyncpg_url, tmp_path / "sidecar-a.log", tick_interval=3600)
    replica_b, target_b = start_serve(module_db.asyncpg_url, tmp_path / "sidecar-b.log", tick_interval=3600)
    env = {
        **module_db.env,
        "SIDECAR_TARGET": f"{target_a},{target_b}",
        "SIDECAR_TICK_DEADLINE": "2",
        "SIDECAR_MAX_RUNNING_BACKFILL_RUNS": str(CAP),
        "SIDECAR_SHIM_FAIRNESS": os.environ.get("SIDECAR_SHIM_FAIRNESS", "on"),
    }
    second_env = {
        **env,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
    }
    processes: list[AirflowProcess] = [replica_a, replica_b]
    samples: list[int] = []
    stop_sampling = threading.Event()
    try:
        with airflow_stack(env, tmp_path / "logs", scheduler_command=SHIM) as stack:
            for dag_id, runs in REGULAR.items():
                for _ in range(runs):
                    _trigger(stack, dag_id)
            wait_until(
                lambda: _count(module_db, "backfill_id IS NULL AND state = 'running'") >= 25,
                90,
                0.25,
                "25 regular runs running",
            )

            def sample() -> None:
                while not stop_sampling.wait(0.05):
                    samples.append(_count(module_db, "backfill_id IS NOT NULL AND state = 'running'"))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _create(
                target_a,
                create_request(
                    FIRST,
                    "2024-01-01T00:00:00Z",
                    "2024-01-30T00:00:00Z",
                    mode=pb.MODE_WINDOWED,
                    max_active_runs=3,
                ),
            )
            second = create_request(
                SECOND,
                "2024-01-01T00:00:00Z",
                "2024-01-10T12:00:00Z",
                mode=pb.MODE_WINDOWED,
                max_active_runs=2,
            )
            second.backfill.reprocess_behavior = pb.REPROCESS_BEHAVIOR_FAILED
            _create(target_b, second)
            # One scheduler first: beside 25 running regular runs Airflow alone never examines the
            # backfill's running runs again (with two schedulers, row locks would dilute that).
            wait_until(
                lambda: _count(module_db, "dag_id = %s AND state = 'success'", FIRST) >= 5,
                90,
                0.25,
                lambda: f"the first backfill to progress\n{stack.scheduler.log_tail()}",
            )
            os.killpg(replica_a.pid, signal.SIGKILL)  # the shims fail over to replica b
            processes.append(start_scheduler(second_env, tmp_path / "logs-2", command=SHIM))
            wait_until(
                lambda: completed(module_db, FIRST) and completed(module_db, SECOND),
                240,
                0.5,
                lambda: f"both backfills to complete\n{processes[-1].log_tail()}\n{replica_b.log_tail()}",
            )
            stop_sampling.set()
            sampler.join(5)
            assert _count(module_db, "backfill_id IS NULL AND state = 'running'") >= 25
            assert (
                _count(module_db, "dag_id = %s AND backfill_id IS NOT NULL AND state = 'success'", FIRST)
                == 30
            )
            assert (
                _count(module_db, "dag_id = %s AND backfill_id IS NOT NULL AND state = 'success'", SECOND)
                == 20
            )
            duplicates = query(
                module_db,
                "SELECT count(*) - count(DISTINCT (dag_id, logical_date)) FROM dag_run WHERE backfill_id IS NOT NULL",
            )
            assert duplicates == [(0,)]
            assert max(samples) <= CAP, max(samples)

            _cancelled_run_cleared_later_still_runs(module_db, stack, target_b)
            stack.assert_running()
            assert all(p.running() for p in processes[1:]), "a scheduler or replica b died"
    finally:
        stop_sampling.set()
        for process in processes:
            process.stop()
    print(
        f"fairness: 25 regular runs running, 50 backfill runs succeeded, max running backfill runs {max(samples)} (cap {CAP}), duplicates 0"
    )


def _cancelled_run_cleared_later_still_runs(db: AirflowDatabase, stack: AirflowStack, target: str) -> None:
    """apache/airflow#72337: with Airflow's cancel the backfill stays paused and a cleared run never starts."""
    backfill = _create(
        target,
        create_request(
            FIRST, "2024-03-01T00:00:00Z", "2024-03-05T00:00:00Z", mode=pb.MODE_EAGER, max_active_runs=1
        ),
    )
    with grpc.insecure_channel(target) as channel:
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        stub.PauseBackfill(pb.PauseBackfillRequest(name=backfill.name), timeout=30)
        stub.CancelBackfill(pb.CancelBackfillRequest(name=backfill.name), timeout=30)
    rows = query(
        db, "SELECT id, state FROM dag_run WHERE backfill_id = %s ORDER BY logical_date DESC", backfill.id
    )
    failed = [r for r in rows if r[1] == "failed"]
    assert failed, rows
    run = failed[0][0]
    # What Airflow's "clear" does to a finished run: its task instances lose their state, it is queued again.
    query(
        db,
        "UPDATE task_instance SET state = NULL, end_date = NULL WHERE (dag_id, run_id) = "
        "(SELECT dag_id, run_id FROM dag_run WHERE id = %s)",
        run,
    )
    query(
        db,
        "UPDATE dag_run SET state = 'queued', clear_number = clear_number + 1, start_date = NULL, end_date = NULL,"
        " queued_at = now() WHERE id = %s",
        run,
    )
    wait_until(
        lambda: query(db, "SELECT state FROM dag_run WHERE id = %s", run) == [("success",)],
        90,
        0.25,
        lambda: f"the cleared run of the cancelled backfill to run\n{stack.scheduler.log_tail()}",
    )
