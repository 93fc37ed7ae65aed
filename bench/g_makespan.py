"""Script G: makespan, creation to the last success of a backfill in the real scheduler.

A ``--runs`` backfill (default 200) of ``bench_makespan_1`` (one Python task that does
nothing, so the executor's cost of a task is what is measured, not the task's) runs in the
real Airflow 3.3.2 scheduler with LocalExecutor and its api-server (which serves the
execution API the task processes call), for each ``--max-active-runs`` (10 and 50):

- Airflow: its own ``POST /api/v2/backfills`` to the running api-server (every run queued
  in one transaction), run by a plain ``airflow scheduler``;
- sidecar: the engine's create in WINDOWED mode, as ``airflow-sidecar serve`` runs it (the
  first window committed at once, the rest topped up by the server on the shim's Tick once
  per loop), run by ``airflow-sidecar scheduler``.

Each variant runs on a fresh database with its own processes, alternating which goes first,
after the processes are up. The makespan is from the create call to the latest
``end_date`` of the backfill's runs. Also printed, to tell what bounds it: the time to the
first task start, the tasks' own mean duration, the mean concurrency (task time / makespan)
against the slots the executor had (``min(parallelism, max_active_runs)``), and the mean
wait of a task between its run's creation and its start.

    python -m bench.g_makespan            # 200 runs, max_active_runs 10 and 50
    python -m bench.g_makespan --quick    # 30 runs, max_active_runs 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench._common import UTC, FreshDatabase, bench_template, days, row
from sidecar.engine import BackfillEngine, BackfillSpec, EngineConfig, Mode
from sidecar.store import connect, prepare
from tests.support.dags import metadata_query, set_dags_paused
from tests.support.processes import start_sidecar
from tests.support.stack import airflow_stack

DAG = "bench_makespan_1"
START = dt.datetime(2021, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def _airflow_create(env: dict[str, str], runs: int, max_active_runs: int) -> None:
    """Airflow's own create, as a user asks for it: ``POST /api/v2/backfills`` to the running
    api-server (simple auth manager, all admins), which answers once its transaction commits."""
    start, end = days(START, runs, DAY)
    body = {
        "dag_id": DAG,
        "from_date": start.isoformat(),
        "to_date": end.isoformat(),
        "max_active_runs": max_active_runs,
    }
    answer = httpx.post(
        f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/backfills", json=body, timeout=3600
    )
    if answer.status_code != 200:
        raise RuntimeError(f"POST /api/v2/backfills answered {answer.status_code}: {answer.text[:500]}")


async def _sidecar_create(url: str, runs: int, max_active_runs: int) -> tuple[float, float]:
    """The sidecar's create on a connected engine (as in ``serve``): ``(epoch started, seconds)``."""
    db = connect(url)
    try:
        await prepare(db)
        engine = BackfillEngine(db, EngineConfig())
        start, end = days(START, runs, DAY)
        spec = BackfillSpec(
            dag_id=DAG, from_date=start, to_date=end, max_active_runs=max_active_runs, mode=Mode.WINDOWED
        )
        started = time.time()
        await engine.create(spec)
        return started, time.time() - started
    finally:
        await db.dispose()


def _finished(env: dict[str, str]) -> int:
    rows = metadata_query(
        env,
        "SELECT count(*) FROM dag_run WHERE dag_id = %s AND backfill_id IS NOT NULL "
        "AND state IN ('success', 'failed')",
        (DAG,),
    )
    (count,) = rows[0]
    return int(str(count))


def _figures(env: dict[str, str], created_at: float) -> dict[str, float]:
    """Seconds from ``created_at`` (epoch) to the last run's end, and what the tasks did."""
    [(last_end, first_start, task_s, wait_s, tasks, failed)] = metadata_query(
        env,
        "SELECT extract(epoch FROM max(r.end_date)), extract(epoch FROM min(ti.start_date)), "
        "sum(extract(epoch FROM ti.end_date - ti.start_date)), "
        "avg(extract(epoch FROM ti.start_date - r.queued_at)), count(*), "
        "count(*) FILTER (WHERE r.state <> 'success') "
        "FROM dag_run r JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id "
        "WHERE r.dag_id = %s AND r.backfill_id IS NOT NULL",
        (DAG,),
    )
    return {
        "makespan": float(last_end) - created_at,  # type: ignore[arg-type]
        "first_start": float(first_start) - created_at,  # type: ignore[arg-type]
        "task_mean": float(task_s) / int(tasks),  # type: ignore[arg-type, call-overload]
        "concurrency": float(task_s) / (float(last_end) - created_at),  # type: ignore[arg-type]
        "wait_mean": float(wait_s),  # type: ignore[arg-type]
        "failed": int(failed),  # type: ignore[call-overload]
    }


def _variant(
    template: str, system: str, runs: int, max_active_runs: int, parallelism: int, timeout: float
) -> dict[str, float]:
    with FreshDatabase(template, f"g{system[0]}") as db, tempfile.TemporaryDirectory() as logs:
        env = db.airflow_env()
        env["AIRFLOW__CORE__PARALLELISM"] = str(parallelism)
        env["AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG"] = str(max(max_active_runs, 16))
        set_dags_paused(env, True)
        set_dags_paused(env, False, [DAG])
        sidecar = None
        command = None
        if system == "sidecar":
            sidecar, target = start_sidecar(db.asyncpg_url, Path(logs))
            env["SIDECAR_TARGET"] = target
            command = [sys.executable, "-m", "sidecar", "scheduler"]
        try:
            with airflow_stack(env, Path(logs), scheduler_command=command, timeout=180) as stack:
                if system == "sidecar":
                    created_at, created = asyncio.run(_sidecar_create(db.asyncpg_url, runs, max_active_runs))
                else:
                    created_at = time.time()
                    _airflow_create(env, runs, max_active_runs)
                    created = time.time() - created_at
                deadline = time.monotonic() + timeout
                while _finished(env) < runs:
                    stack.assert_running()
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{system}: {_finished(env)}/{runs} runs finished in {timeout:.0f} s"
                        )
                    time.sleep(0.5)
                figures = _figures(env, created_at)
        finally:
            if sidecar is not None:
                sidecar.stop()
    return {**figures, "create": created}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 runs, max_active_runs 10")
    parser.add_argument("--runs", type=int, default=None, help="backfill size (default 200)")
    parser.add_argument("--max-active-runs", default=None, help="comma-separated (default 10,50)")
    parser.add_argument(
        "--parallelism", type=int, default=32, help="[core] parallelism (Airflow's default 32)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating pairs per max_active_runs")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per variant")
    args = parser.parse_args()
    runs = args.runs or (30 if args.quick else 200)
    windows = [int(v) for v in (args.max_active_runs or ("10" if args.quick else "10,50")).split(",")]
    template = bench_template()
    print(
        row(
            "max_active_runs",
            "system",
            "makespan",
            "create call",
            "first task start",
            "task mean",
            "mean concurrency / slots",
            "task wait mean",
        )
    )
    print(row(*["---"] * 8), flush=True)
    summary: list[str] = []
    for window in windows:
        results: dict[str, list[dict[str, float]]] = {"airflow": [], "sidecar": []}
        for repeat in range(args.repeats):
            order = ("airflow", "sidecar") if repeat % 2 == 0 else ("sidecar", "airflow")
            for system in order:
                r = _variant(template, system, runs, window, args.parallelism, args.timeout)
                results[system].append(r)
                slots = min(args.parallelism, window)
                print(
                    row(
                        window,
                        system,
                        f"{r['makespan']:.1f} s",
                        f"{r['create']:.2f} s",
                        f"{r['first_start']:.1f} s",
                        f"{r['task_mean']:.2f} s",
                        f"{r['concurrency']:.1f} / {slots}",
                        f"{r['wait_mean']:.1f} s"
                        + (f" ({r['failed']:.0f} runs failed)" if r["failed"] else ""),
                    ),
                    flush=True,
                )
        airflow = statistics.median(r["makespan"] for r in results["airflow"])
        sidecar = statistics.median(r["makespan"] for r in results["sidecar"])
        summary.append(
            f"max_active_runs {window}: {runs} runs, Airflow {airflow:.1f} s vs sidecar {sidecar:.1f} s: "
            f"sidecar/Airflow {sidecar / airflow:.2f}x (median of {args.repeats})"
        )
    print("\n".join(summary))
    print(f"LocalExecutor, parallelism {args.parallelism}; makespan: create call to the last run's end_date")


if __name__ == "__main__":
    main()
