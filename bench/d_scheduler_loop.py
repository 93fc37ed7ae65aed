"""Script D: the real Airflow 3.3.2 scheduler's loop time with a large backfill active, and without.

The scheduler runs with the shim (``python -m sidecar scheduler``) in every situation, so
the measurement is the same everywhere: the shim times each call of Airflow's
``_do_scheduling`` (its Tick to the sidecar included) and, with
``SIDECAR_SHIM_STATS_INTERVAL=0``, logs one ``sidecar shim loop stats: loops=1 ...`` line
per loop; this script reads those lines for a fixed window after a warm-up.

Each situation runs on a fresh clone of the migrated Airflow template database with
``bench/dags`` serialized; only the DAG of the situation is unpaused, the other bench
DAGs are paused so their runs cannot land in one window and not another:

1. no backfill at all (``bench_hourly_10``'s one scheduled run, catchup off, finishes in
   the warm-up): the scheduler with nothing to do;
2. the like-for-like baseline: no backfill, but ``bench_daily_10_catchup`` (the same 10
   chained tasks, catchup on from 1900, max_active_runs 10), so the scheduler itself keeps
   10 regular runs in flight and creates one whenever one finishes, with the same shim;
3. a ``--runs`` backfill (default 100,000) of ``bench_hourly_10`` created by the sidecar
   in WINDOWED mode, max_active_runs 10, topped up by the shim's Tick every loop;
4. the same backfill as Airflow itself creates it: every run queued up front. Airflow's
   own ``_create_backfill`` needs hours for 100,000 runs (about 100 runs/s and falling,
   see script A/C), so the rows are written by the sidecar's EAGER mode, which writes
   row-for-row what Airflow writes (proved by ``tests/parity``).

Tasks do nothing: they are ``EmptyOperator``s, which Airflow's scheduler marks successful
itself (no executor, no task process, no api-server needed). So runs advance at the
scheduler's own pace (10 in flight, one task of each per loop) and every loop of
situations 2, 3 and 4 does the same real work: (3) against (2) is the sidecar's cost.
Besides the loop time (Tick included, what the scheduler pays) the script prints the
Airflow part (loop minus Tick), the Tick's own time per loop (median and p90, as the shim
measures it) and how many runs finished in the window.

    python -m bench.d_scheduler_loop            # 100,000 runs, 60 s per situation after 20 s warm-up
    python -m bench.d_scheduler_loop --quick    # 5,000 runs, 20 s after 10 s warm-up
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._common import UTC, FreshDatabase, bench_template, days, row, sidecar_create
from sidecar.engine import Mode
from tests.support.dags import metadata_query, set_dags_paused
from tests.support.processes import start_sidecar
from tests.support.stack import start_scheduler

DAG = "bench_hourly_10"
CATCHUP_DAG = "bench_daily_10_catchup"
HOUR = dt.timedelta(hours=1)
START = dt.datetime(1900, 1, 1, tzinfo=UTC)  # 100,000 hours later is 1911: all in the past
STATS = re.compile(r"sidecar shim loop stats: loops=(\d+) loop_max_ms=([\d.]+) \S+ tick_max_ms=([\d.]+)")


def _p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-9 * len(ordered) // 10) - 1)]


def _runs_by_state(env: dict[str, str], dag_id: str) -> dict[str, int]:
    rows = metadata_query(
        env,
        "SELECT state, count(*) FROM dag_run WHERE dag_id = %s AND run_type <> 'manual' GROUP BY state",
        (dag_id,),
    )
    return {str(state): int(count) for state, count in rows}  # type: ignore[call-overload]


def _situation(
    template: str,
    label: str,
    dag_id: str,
    mode: Mode | None,
    runs: int,
    warmup: float,
    seconds: float,
    fairness: str,
) -> dict[str, object]:
    """Loop times (ms) of the scheduler with the shim over ``seconds`` after ``warmup``."""
    with FreshDatabase(template, f"d{label}") as db, tempfile.TemporaryDirectory() as logs:
        env = db.airflow_env()
        set_dags_paused(env, True)
        set_dags_paused(env, False, [dag_id])
        created = 0.0
        if mode is not None:
            start, end = days(START, runs, HOUR)
            created, _ = sidecar_create(db.asyncpg_url, DAG, start, end, mode=mode, max_active_runs=10)
        sidecar, target = start_sidecar(db.asyncpg_url, Path(logs))
        try:
            env.update(
                SIDECAR_TARGET=target,
                SIDECAR_SHIM_STATS_INTERVAL="0",  # one stats line per loop: loops=1, max = that loop
                SIDECAR_SHIM_FAIRNESS=fairness,
            )
            scheduler = start_scheduler(
                env, Path(logs), command=[sys.executable, "-m", "sidecar", "scheduler"], timeout=180
            )
            try:
                time.sleep(warmup)
                before_runs = _runs_by_state(env, dag_id)
                offset = scheduler.log_path.stat().st_size
                time.sleep(seconds)
                with scheduler.log_path.open("rb") as log:
                    log.seek(offset)
                    window = log.read().decode(errors="replace")
                after_runs = _runs_by_state(env, dag_id)
                if not scheduler.running():
                    raise RuntimeError(f"the scheduler died:\n{scheduler.log_tail()}")
            finally:
                scheduler.stop()
        finally:
            sidecar.stop()
    lines = STATS.findall(window)
    if not lines:
        raise RuntimeError(f"no loop stats in the window ({label}):\n{window[-3000:]}")
    if any(int(n) != 1 for n, _, _ in lines):
        raise RuntimeError("expected one stats line per loop")
    loops = [float(loop) for _, loop, _ in lines]
    airflow = [float(loop) - float(tick) for _, loop, tick in lines]
    return {
        "loops": loops,
        "airflow": airflow,
        "ticks": [float(tick) for _, _, tick in lines],
        "created_s": created,
        "finished": after_runs.get("success", 0) - before_runs.get("success", 0),
        "queued": after_runs.get("queued", 0),
        "written": sum(after_runs.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 runs, 20 s windows, 10 s warm-up")
    parser.add_argument("--runs", type=int, default=None, help="backfill size (default 100,000)")
    parser.add_argument("--seconds", type=float, default=None, help="measured window per situation (60)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the window (20)")
    parser.add_argument(
        "--shim-fairness", choices=("on", "off"), default="on", help="SIDECAR_SHIM_FAIRNESS (default on)"
    )
    parser.add_argument(
        "--situations", default="1,2,3,4", help="which situations to run, e.g. 2,3 (default 1,2,3,4)"
    )
    args = parser.parse_args()
    runs = args.runs or (5_000 if args.quick else 100_000)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (10.0 if args.quick else 20.0)
    template = bench_template()
    situations = [
        ("1", "no backfill, nothing to do", DAG, None),
        ("2", "no backfill, 10 regular catchup runs in flight (like-for-like)", CATCHUP_DAG, None),
        ("3", f"sidecar windowed backfill, {runs:,} runs, max_active_runs 10", DAG, Mode.WINDOWED),
        (
            "4",
            f"Airflow-style backfill, {runs:,} runs all queued (written by sidecar eager)",
            DAG,
            Mode.EAGER,
        ),
    ]
    wanted = {s.strip() for s in args.situations.split(",")}
    situations = [s for s in situations if s[0] in wanted]
    results: dict[str, dict[str, object]] = {}
    for key, name, dag_id, mode in situations:
        results[key] = r = _situation(template, key, dag_id, mode, runs, warmup, seconds, args.shim_fairness)
        loops = r["loops"]
        print(
            f"# ({key}) {name}: {len(loops)} loops in {seconds:.0f} s, "  # type: ignore[arg-type]
            f"{r['finished']} runs finished, {r['queued']} queued, {r['written']} written"
            + (f", created in {r['created_s']:.1f} s" if mode is not None else ""),
            flush=True,
        )
    # The baseline: the like-for-like (2) when it ran, else the first situation that did.
    first = "2" if "2" in results else situations[0][0]
    base = statistics.median(results[first]["loops"])  # type: ignore[arg-type]
    base_af = statistics.median(results[first]["airflow"])  # type: ignore[arg-type]
    print(
        row(
            "situation",
            "loops",
            "median loop",
            "p90 loop",
            f"vs ({first})",
            "median Airflow part",
            f"vs ({first})",
            "median Tick",
            "p90 Tick",
        )
    )
    print(row(*["---"] * 9))
    for key, name, _, _ in situations:
        r = results[key]
        loops, airflow, ticks = r["loops"], r["airflow"], r["ticks"]
        med, med_af = statistics.median(loops), statistics.median(airflow)  # type: ignore[arg-type]
        print(
            row(
                f"({key}) {name}",
                len(loops),  # type: ignore[arg-type]
                f"{med:.1f} ms",
                f"{_p90(loops):.1f} ms",  # type: ignore[arg-type]
                f"{med / base:.2f}x",
                f"{med_af:.1f} ms",
                f"{med_af / base_af:.2f}x",
                f"{statistics.median(ticks):.1f} ms",  # type: ignore[arg-type]
                f"{_p90(ticks):.1f} ms",  # type: ignore[arg-type]
            )
        )
    for a, b in (("3", "2"), ("4", "2"), ("4", "3"), ("2", "1"), ("3", "1")):
        if a in results and b in results:
            la, lb = results[a]["loops"], results[b]["loops"]
            print(
                f"ratio ({a})/({b}): {statistics.median(la) / statistics.median(lb):.2f}x (median), "  # type: ignore[arg-type]
                f"{_p90(la) / _p90(lb):.2f}x (p90)"  # type: ignore[arg-type]
            )
    if "4" in results:
        print(
            "(4) was built with the sidecar's EAGER mode (row-for-row what Airflow's _create_backfill writes, "
            "tests/parity); Airflow itself would need hours for it."
        )
    print(
        f"shim fairness: {args.shim_fairness}; loop = _do_scheduling incl. Tick, Airflow part = loop - Tick"
    )


if __name__ == "__main__":
    main()
