"""Script F: Airflow's own ``POST /api/v2/backfills``, without and with the plugin.

The same request (5,000 daily runs x 10 tasks by default) to a real Airflow 3.3.2
api-server, each on a fresh clone of the same database: first without the plugin (Airflow's
``_create_backfill``: every run and task instance in the request), then with it (the sidecar
answers after Airflow's own authentication; windowed, the sidecar's default, so the request
returns once the first window of runs is committed and the rest follows the scheduler).
Prints the seconds each request took and the ratio.

    python -m bench.f_airflow_api                 # 5,000 runs x 10 tasks
    python -m bench.f_airflow_api --runs 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import UTC, FreshDatabase, bench_template, days, row
from tests.support.airflow import airflow_environ
from tests.support.dags import metadata_query
from tests.support.plugin import plugin_pythonpath
from tests.support.processes import AirflowProcess, start_sidecar
from tests.support.stack import start_api_server

DAG_ID = "bench_daily_10"


def _post(env: dict[str, str], body: dict[str, Any]) -> tuple[float, int]:
    """Seconds ``POST /api/v2/backfills`` took (simple auth manager, all admins), and its status."""
    url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/backfills"
    started = time.perf_counter()
    answer = httpx.post(url, json=body, timeout=3600)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"POST /api/v2/backfills answered {answer.status_code}: {answer.text[:500]}")
    return elapsed, answer.status_code


def _measure(template: str, body: dict[str, Any], work: Path, *, plugin: bool) -> tuple[float, int, int]:
    """One api-server on a fresh database: the request's seconds, runs written, and backfill rows."""
    label = "on" if plugin else "off"
    with FreshDatabase(template, f"f{label}") as db:
        env = airflow_environ(work / f"home-{label}", db.psycopg2_url, Path(__file__).parent / "dags")
        started: list[AirflowProcess] = []
        try:
            if plugin:
                sidecar, target = start_sidecar(db.asyncpg_url, work / f"logs-{label}")
                started.append(sidecar)
                env.update(SIDECAR_TARGET=target, PYTHONPATH=plugin_pythonpath(work))
            started.append(start_api_server(env, work / f"logs-{label}", timeout=180))
            seconds, _ = _post(env, body)
            ((runs,),) = metadata_query(env, "SELECT count(*) FROM dag_run WHERE run_type = 'backfill'")
            ((backfills,),) = metadata_query(env, "SELECT count(*) FROM backfill")
            return seconds, int(str(runs)), int(str(backfills))
        finally:
            for process in reversed(started):
                process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5_000, help="daily runs of the 10-task DAG (default 5000)"
    )
    args = parser.parse_args()
    start, end = days(dt.datetime(2000, 1, 1, tzinfo=UTC), args.runs, dt.timedelta(days=1))
    body = {
        "dag_id": DAG_ID,
        "from_date": start.isoformat(),
        "to_date": end.isoformat(),
        "max_active_runs": 10,
    }
    template = bench_template()
    with tempfile.TemporaryDirectory(prefix="bench-f-") as tmp:
        work = Path(tmp)
        off, off_runs, _ = _measure(template, body, work, plugin=False)
        on, on_runs, on_backfills = _measure(template, body, work, plugin=True)
    assert off_runs == args.runs, (off_runs, args.runs)
    assert on_backfills == 1 and 0 < on_runs <= args.runs, (on_backfills, on_runs)
    print(row("POST /api/v2/backfills", "runs x tasks", "runs written when it returned", "seconds"))
    print(row("---", "---", "---", "---"))
    print(row("Airflow alone (_create_backfill)", f"{args.runs} x 10", off_runs, f"{off:.2f}"))
    print(row("with the plugin (sidecar, windowed)", f"{args.runs} x 10", on_runs, f"{on:.3f}"))
    print(f"\nAirflow / plugin: {off / on:.0f}x faster for the caller of Airflow's own API")


if __name__ == "__main__":
    main()
