"""The scheduler is never hurt: the real Airflow 3.3.2 scheduler with the shim, and a sidecar
that is healthy, slow, erroring and stopped in turn.

The shim reaches the sidecar through a loopback TCP proxy (latency, refusals), and the
sidecar reaches PostgreSQL through another one (cut: the sidecar answers Tick with
errors). The scheduler logs its own loop times (``_do_scheduling``, Tick included) every
two seconds; per fault the test reads them, checks that a Tick never cost the loop much
more than its deadline, that regular DAG runs triggered through Airflow's REST API keep
running to success, and that the backfill, stalled while the sidecar is away, completes
once it returns.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.resilience.helpers import completed, create_request, query, start_serve
from tests.support.fixtures import AirflowDatabase
from tests.support.postgres import PG_HOST, PG_PORT, PG_USER
from tests.support.stack import AirflowStack, airflow_stack
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

DAG = "sidecar_it_params"  # one EmptyOperator: Airflow finishes its runs without an executor
DEADLINE = 0.5
STATS = re.compile(
    r"sidecar shim loop stats: loops=(\d+) loop_max_ms=([\d.]+) loop_mean_ms=([\d.]+) tick_max_ms=([\d.]+)"
)


def _stats(stack: AirflowStack) -> list[tuple[int, float, float, float]]:
    text = stack.scheduler.log_path.read_text(errors="replace")
    return [(int(a), float(b), float(c), float(d)) for a, b, c, d in STATS.findall(text)]


def _trigger(stack: AirflowStack) -> str:
    request = urllib.request.Request(
        f"{stack.api_url}/api/v2/dags/{DAG}/dagRuns",
        data=json.dumps({"logical_date": None}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        run_id: str = json.load(response)["dag_run_id"]
        return run_id


def _phase(stack: AirflowStack, db: AirflowDatabase, name: str) -> dict[str, float]:
    """Let the scheduler loop under the current fault: a regular run must succeed meanwhile."""
    before = len(_stats(stack))
    run_id = _trigger(stack)
    wait_until(
        lambda: (
            query(db, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG, run_id)
            == [("success",)]
        ),
        90,
        0.25,
        lambda: f"regular run {run_id} to succeed while the sidecar is {name}\n{stack.scheduler.log_tail()}",
    )
    # At least three fresh stats windows (two seconds each) under this fault.
    wait_until(lambda: len(_stats(stack)) >= before + 3, 60, 0.25, f"loop stats while {name}")
    windows = _stats(stack)[before + 1 :]  # the first window may straddle the change
    loops = sum(w[0] for w in windows)
    return {
        "loops": loops,
        "loop_max_ms": max(w[1] for w in windows),
        "loop_mean_ms": sum(w[0] * w[2] for w in windows) / max(loops, 1),
        "tick_max_ms": max(w[3] for w in windows),
    }


@pytest.mark.timeout(420)
def test_a_slow_erroring_or_stopped_sidecar_costs_the_scheduler_at_most_the_deadline(
    module_db: AirflowDatabase, tmp_path: Path
) -> None:
    figures: dict[str, dict[str, float]] = {}
    with tcp_proxy(PG_HOST, PG_PORT) as db_proxy:
        url = f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{db_proxy.port}/{module_db.name}"
        # Only the shim ticks (the sidecar's own timer is an hour): a stalled shim stalls the backfill.
        sidecar, target = start_serve(url, tmp_path / "sidecar.log", tick_interval=3600)
        host, port = target.split(":")
        try:
            with tcp_proxy(host, int(port)) as grpc_proxy:
                env = {
                    **module_db.env,
                    "SIDECAR_TARGET": f"127.0.0.1:{grpc_proxy.port}",
                    "SIDECAR_TICK_DEADLINE": str(DEADLINE),
                    "SIDECAR_BREAKER_THRESHOLD": "3",
                    "SIDECAR_BREAKER_COOLDOWN": "5",
                    "SIDECAR_SHIM_STATS_INTERVAL": "2",
                }
                with airflow_stack(
                    env, tmp_path / "logs", scheduler_command=[sys.executable, "-m", "sidecar", "scheduler"]
                ) as stack:
                    import grpc

                    with grpc.insecure_channel(target) as channel:
                        backfill_pb2_grpc.BackfillServiceStub(channel).CreateBackfill(
                            create_request(
                                DAG,
                                "2024-01-01T00:00:00Z",
                                "2024-01-30T00:00:00Z",
                                mode=pb.MODE_WINDOWED,
                                max_active_runs=2,
                            ),
                            timeout=30,
                        )
                    figures["healthy"] = _phase(stack, module_db, "healthy")

                    grpc_proxy.delay = 3 * DEADLINE
                    figures["slow"] = _phase(stack, module_db, "slow")
                    grpc_proxy.delay = 0

                    db_proxy.refuse = True
                    db_proxy.drop_all()
                    figures["erroring"] = _phase(stack, module_db, "erroring")

                    grpc_proxy.refuse = True
                    grpc_proxy.drop_all()
                    sidecar.stop()
                    figures["stopped"] = _phase(stack, module_db, "stopped")
                    stalled = _backfill_runs(module_db)

                    db_proxy.refuse = grpc_proxy.refuse = False
                    sidecar, target = start_serve(url, tmp_path / "sidecar-2.log", tick_interval=3600)
                    grpc_proxy.upstream = ("127.0.0.1", int(target.split(":")[1]))
                    wait_until(
                        lambda: completed(module_db, DAG),
                        180,
                        0.5,
                        lambda: f"the backfill to complete\n{sidecar.log_tail()}",
                    )
                    stack.assert_running()
        finally:
            sidecar.stop()
    print(f"scheduler loop under sidecar faults (Tick deadline {DEADLINE}s): {json.dumps(figures)}")
    assert _backfill_runs(module_db) == 30 > stalled
    # While the sidecar was slow, failing or gone, the shim held Airflow's completion timer back
    # (the last Tick's list, then every backfill once no Tick had answered for a minute):
    # the sidecar never had to reopen a backfill Airflow closed early.
    for log in ("sidecar.log", "sidecar-2.log"):
        assert "completed early" not in (tmp_path / log).read_text(errors="replace"), log
    for name, f in figures.items():
        # A Tick never costs the loop much more than its deadline (generous margin: a shared 2-core box).
        assert f["tick_max_ms"] <= DEADLINE * 1000 + 1500, (name, f)


def _backfill_runs(db: AirflowDatabase) -> int:
    return int(
        query(db, "SELECT count(*) FROM dag_run WHERE dag_id = %s AND backfill_id IS NOT NULL", DAG)[0][0]
    )  # type: ignore[call-overload]
