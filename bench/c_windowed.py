"""Script C: windowed mode at scale: time to the first queued run, and the sidecar's peak memory.

1. Time until the first run of a 100,000-run (10-task) windowed backfill is committed,
   i.e. queued and visible to the scheduler (``CreateBackfill`` returns after that
   commit), for four schedules: hourly and daily in UTC (counted arithmetically), hourly
   and weekdays in Europe/Amsterdam (stepped slot by slot in a planning worker after
   creation). Each repeat runs in a fresh process (:mod:`bench._fresh`): a planning
   worker or counting thread of an earlier repeat must not slow a later one. The engine
   warms up first, as ``serve`` does at start (a create rehearsed and rolled back:
   ``--cold`` skips it), so the figure is a create against a running server. Also
   printed: when the count was recorded, and how late the event loop woke a 1 ms sleep
   at most meanwhile (the count must stay off the loop). Against Airflow 3.3.2's time
   until its one transaction commits, measured on ``--airflow-runs`` runs and
   extrapolated linearly to 100,000 (its rate only falls with size, so the ratio printed
   is a lower bound).
2. Peak RSS (``VmHWM``) of the ``airflow-sidecar serve`` process: after a windowed
   1,000,000-run backfill is created, and after an eager backfill of ``--eager-runs``
   runs (every row written) on a fresh server; memory must not grow with the size.
3. The scheduler loop time with the backfill active is not measured here (see docs/benchmarks.md).

    python -m bench.c_windowed            # 100,000-run first-run latency, 1M windowed + 100k eager RSS
    python -m bench.c_windowed --quick    # 10,000 runs, 1M windowed + 10k eager RSS
    python -m bench.c_windowed --first-run-only   # only part 1
    python -m bench.c_windowed --first-run-only --cold   # part 1 without serve's warm-up
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    ROOT,
    UTC,
    FreshDatabase,
    airflow_create,
    bench_template,
    days,
    median_of,
    row,
)
from bench._fresh import answer, in_fresh_process
from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, EngineConfig, Mode
from sidecar.store import connect, plan_record, prepare
from tests.support.processes import start_sidecar

DAG = "bench_hourly_10"
DST_DAG = "bench_hourly_10_amsterdam"
HOUR = dt.timedelta(hours=1)
START = dt.datetime(1900, 1, 1, tzinfo=UTC)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _serve_rss(template: str, runs: int, mode: Mode) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh ``serve`` process before and after creating one backfill of ``runs``."""
    with FreshDatabase(template, "rss") as db, tempfile.TemporaryDirectory() as logs:
        process, target = start_sidecar(db.asyncpg_url, Path(logs))
        try:
            before = _vm_hwm_mb(process.pid)
            start, end = days(START, runs, HOUR)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sidecar",
                    "backfill",
                    "--target",
                    target,
                    "--timeout",
                    "3600",
                    "create",
                    "--dag-id",
                    DAG,
                    "--from-date",
                    start.isoformat(),
                    "--to-date",
                    end.isoformat(),
                    "--max-active-runs",
                    "16",
                    "--mode",
                    mode.value,
                    "--output",
                    "json",
                ],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            return before, _vm_hwm_mb(process.pid)
        finally:
            process.stop()


#: ``(label, dag_id, first slot, slot length)`` of the first-run cases; the DST-zone ones are
#: counted in a planning worker after creation, the others arithmetically at once.
CASES = (
    ("hourly, UTC", DAG, START, HOUR),
    ("daily, UTC", "bench_daily_10", START, dt.timedelta(days=1)),
    ("hourly, Europe/Amsterdam (counted in the background)", DST_DAG, START, HOUR),
    (
        "weekdays 09:30, Europe/Amsterdam (counted in the background)",
        "bench_weekdays_amsterdam",
        START,
        dt.timedelta(days=1.4),  # about as many weekdays as slots (to 2283: creation allows the future)
    ),
)


async def _lag_monitor(lags: list[float], stop: asyncio.Event) -> None:
    """How late the event loop wakes a 1 ms sleep, every time until ``stop``."""
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - asked - 0.001)


async def _first_run(
    url: str, dag_id: str, start: dt.datetime, end: dt.datetime, count_wait: float, warm: bool = True
) -> dict[str, float | int | None]:
    """Create one windowed backfill on a fresh engine; time it, and the background count
    (waited for ``count_wait`` seconds at most: its worker runs only on an idle core)."""
    db = connect(url)
    await prepare(db)
    engine = BackfillEngine(db, EngineConfig())
    if warm:
        await engine.warm_up()  # as ``serve`` does at start: the create is one against a running server
    lags: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_lag_monitor(lags, stop))
    try:
        spec = BackfillSpec(
            dag_id=dag_id, from_date=start, to_date=end, max_active_runs=10, mode=Mode.WINDOWED
        )
        started, cpu = time.perf_counter(), time.process_time()
        view = await engine.create(spec)
        created, cpu = time.perf_counter() - started, time.process_time() - cpu
        create_lag = max(lags, default=0.0)
        assert isinstance(view, BackfillView) and view.progress.written > 0
        planned: int | None = None
        counted: float | None = None
        while counted is None and time.perf_counter() - started < count_wait:
            record = await engine.tx.read(lambda conn: plan_record(conn, view.id))
            planned = None if record is None else record.planned_count
            if planned is None:  # the count: at once for even schedules, else in a planning worker
                await asyncio.sleep(0.05)
            else:
                counted = time.perf_counter() - started
        return {
            "created_s": created,
            "create_cpu_s": cpu,
            "written": view.progress.written,
            "planned": planned,
            "counted_s": counted,
            "create_lag_ms": create_lag * 1000,
            "lag_max_ms": max(lags, default=0.0) * 1000,
        }
    finally:
        stop.set()
        await monitor
        await engine.close()
        await db.dispose()


def _one(case: dict[str, Any]) -> None:
    """``--one``: one first-run case in this (fresh) process."""
    with FreshDatabase(case["template"], "c") as db:
        result = asyncio.run(
            _first_run(
                db.asyncpg_url,
                case["dag_id"],
                dt.datetime.fromisoformat(case["from"]),
                dt.datetime.fromisoformat(case["to"]),
                case["count_wait"],
                case.get("warm", True),
            )
        )
    answer(result)


def _first_runs(template: str, runs: int, repeats: int, count_wait: float, warm: bool = True) -> float:
    """Print one row per case (each repeat a fresh process); the median of the hourly UTC case."""
    headline = 0.0
    for label, dag_id, first, step in CASES:
        start, end = days(first, runs, step)
        case = {
            "template": template,
            "dag_id": dag_id,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "count_wait": count_wait,
            "warm": warm,
        }
        results = [in_fresh_process("bench.c_windowed", case) for _ in range(repeats)]
        created = [r["created_s"] * 1000 for r in results]
        median = statistics.median(created)
        headline = headline or median / 1000
        cpu = statistics.median(r["create_cpu_s"] * 1000 for r in results)
        counts = [r["counted_s"] for r in results if r["counted_s"] is not None]
        counted = (
            f"count recorded after {statistics.median(counts):.2f} s ({len(counts)}/{len(results)} within {count_wait:.0f} s)"
            if counts
            else f"count not recorded within {count_wait:.0f} s (its worker runs on idle cores only)"
        )
        lag = max(r["lag_max_ms"] for r in results)
        print(
            row(
                f"sidecar windowed: first run queued, {label}, {runs:,} slots"
                + ("" if warm else " (no warm-up)"),
                f"{median:.0f} ms",
                f"median of {sorted(round(v) for v in created)} ms, each in a fresh process "
                f"(its CPU {cpu:.0f} ms); {counted}; event loop late by at most {lag:.1f} ms",
            ),
            flush=True,
        )
    return headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--airflow-runs", type=int, default=2_000)
    parser.add_argument("--eager-runs", type=int, default=100_000)
    parser.add_argument("--first-run-only", action="store_true", help="only the first-run cases")
    parser.add_argument(
        "--count-wait", type=float, default=60.0, help="seconds to wait for a background count"
    )
    parser.add_argument(
        "--cold", action="store_true", help="skip serve's warm-up (a create as a fresh process's first)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a case, in a fresh process (bench._fresh)
    args = parser.parse_args()
    if args.one:
        _one(json.loads(args.one))
        return
    runs = 10_000 if args.quick else 100_000
    eager_runs = 10_000 if args.quick else args.eager_runs
    airflow_runs = min(args.airflow_runs, 500) if args.quick else args.airflow_runs
    template = bench_template()
    print(row("measure", "value", "how"))
    print(row("---", "---", "---"), flush=True)
    first = _first_runs(template, runs, 3 if args.quick else args.repeats, args.count_wait, not args.cold)
    if args.first_run_only:
        return
    a_start, a_end = days(START, airflow_runs, HOUR)

    def airflow() -> float:
        with FreshDatabase(template, "ca") as db:
            return airflow_create(db, DAG, a_start, a_end)

    measured, _ = median_of(1 if args.quick else 3, airflow)
    extrapolated = measured * runs / airflow_runs
    print(
        row(
            f"Airflow: transaction committed, {runs:,} runs",
            f"{extrapolated:.0f} s",
            f"{measured:.1f} s measured for {airflow_runs:,} runs, x {runs / airflow_runs:.0f}",
        )
    )
    print(row("ratio Airflow / sidecar (hourly, UTC)", f"{extrapolated / first:,.0f}x", ""), flush=True)
    before, after = _serve_rss(template, 1_000_000, Mode.WINDOWED)
    print(
        row(
            "serve peak RSS, windowed 1,000,000-run backfill", f"{after:.0f} MB", f"{before:.0f} MB at start"
        ),
        flush=True,
    )
    before, after = _serve_rss(template, eager_runs, Mode.EAGER)
    print(
        row(
            f"serve peak RSS, eager {eager_runs:,}-run backfill (all rows)",
            f"{after:.0f} MB",
            f"{before:.0f} MB at start",
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
