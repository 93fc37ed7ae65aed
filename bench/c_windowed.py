"""Script C: windowed mode at scale: time to the first queued run, and the sidecar's peak memory.

1. Time until the first run of a 100,000-run (hourly, 10-task) windowed backfill is
   committed, i.e. queued and visible to the scheduler (``CreateBackfill`` returns after
   that commit), against Airflow 3.3.2's time until its one transaction commits.
   Airflow is measured on ``--airflow-runs`` runs and extrapolated linearly to 100,000
   (its rate only falls with size, so the ratio printed is a lower bound).
2. Peak RSS (``VmHWM``) of the ``airflow-sidecar serve`` process: after a windowed
   1,000,000-run backfill is created, and after an eager backfill of ``--eager-runs``
   runs (every row written) on a fresh server; memory must not grow with the size.
3. The scheduler loop time with the backfill active is not measured here (see docs/benchmarks.md).

    python -m bench.c_windowed            # 100,000-run first-run latency, 1M windowed + 100k eager RSS
    python -m bench.c_windowed --quick    # 10,000 runs, 1M windowed + 10k eager RSS
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import (
    ROOT,
    UTC,
    FreshDatabase,
    airflow_create,
    bench_template,
    days,
    median_of,
    row,
    sidecar_create,
)
from sidecar.engine import Mode
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--airflow-runs", type=int, default=2_000)
    parser.add_argument("--eager-runs", type=int, default=100_000)
    args = parser.parse_args()
    runs = 10_000 if args.quick else 100_000
    eager_runs = 10_000 if args.quick else args.eager_runs
    airflow_runs = min(args.airflow_runs, 500) if args.quick else args.airflow_runs
    template = bench_template()
    start, end = days(START, runs, HOUR)

    def first_run() -> float:
        with FreshDatabase(template, "c") as db:
            seconds, written = sidecar_create(db.asyncpg_url, DAG, start, end, mode=Mode.WINDOWED)
            assert written > 0
            return seconds

    first, all_first = median_of(args.repeats, first_run)

    def first_run_dst() -> float:
        with FreshDatabase(template, "cd") as db:
            seconds, written = sidecar_create(db.asyncpg_url, DST_DAG, start, end, mode=Mode.WINDOWED)
            assert written > 0
            return seconds

    first_dst, all_first_dst = median_of(args.repeats, first_run_dst)
    a_start, a_end = days(START, airflow_runs, HOUR)

    def airflow() -> float:
        with FreshDatabase(template, "ca") as db:
            return airflow_create(db, DAG, a_start, a_end)

    measured, _ = median_of(1 if args.quick else 3, airflow)
    extrapolated = measured * runs / airflow_runs
    print(row("measure", "value", "how"))
    print(row("---", "---", "---"))
    print(
        row(
            f"sidecar windowed: first run queued, {runs:,} runs",
            f"{first * 1000:.0f} ms",
            f"median of {sorted(round(v * 1000) for v in all_first)} ms",
        )
    )
    print(
        row(
            f"sidecar windowed, Europe/Amsterdam hourly (counted in the background): first run queued, {runs:,} runs",
            f"{first_dst * 1000:.0f} ms",
            f"median of {sorted(round(v * 1000) for v in all_first_dst)} ms",
        )
    )
    print(
        row(
            f"Airflow: transaction committed, {runs:,} runs",
            f"{extrapolated:.0f} s",
            f"{measured:.1f} s measured for {airflow_runs:,} runs, x {runs / airflow_runs:.0f}",
        )
    )
    print(row("ratio Airflow / sidecar", f"{extrapolated / first:,.0f}x", ""), flush=True)
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
