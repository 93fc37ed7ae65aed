"""Script A: Airflow 3.3.2's own ``_create_backfill`` against the sidecar's eager mode.

Same PostgreSQL, same schema (fresh clone each time), same DAG and range. Prints the
median seconds of each and the ratio Airflow / sidecar.

    python -m bench.a_vs_airflow            # 5,000 daily runs x 10 tasks, 1,000 runs x 50 tasks
    python -m bench.a_vs_airflow --quick    # 500 x 10 and 100 x 50
"""

from __future__ import annotations

import argparse
import datetime as dt
from functools import partial

from bench._common import (
    UTC,
    FreshDatabase,
    airflow_create,
    bench_template,
    days,
    median_of,
    row,
    sidecar_create,
)


def _airflow(template: str, dag_id: str, start: dt.datetime, end: dt.datetime) -> float:
    with FreshDatabase(template, "a") as db:
        return airflow_create(db, dag_id, start, end)


def _sidecar(template: str, dag_id: str, start: dt.datetime, end: dt.datetime, runs: int) -> float:
    with FreshDatabase(template, "s") as db:
        seconds, written = sidecar_create(db.asyncpg_url, dag_id, start, end)
        assert written == runs, (written, runs)
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = [("bench_daily_10", 5_000, 10), ("bench_daily_50", 1_000, 50)]
    if args.quick:
        cases = [("bench_daily_10", 500, 10), ("bench_daily_50", 100, 50)]
    template = bench_template()
    print(
        row("case", "task instances", "Airflow s (median)", "sidecar eager s (median)", "Airflow / sidecar")
    )
    print(row("---", "---", "---", "---", "---"))
    for dag_id, runs, tasks in cases:
        start, end = days(dt.datetime(2000, 1, 1, tzinfo=UTC), runs, dt.timedelta(days=1))
        a, a_all = median_of(args.repeats, partial(_airflow, template, dag_id, start, end))
        s, s_all = median_of(args.repeats, partial(_sidecar, template, dag_id, start, end, runs))
        print(
            row(
                f"{runs} runs x {tasks} tasks",
                runs * tasks,
                f"{a:.2f} {sorted(round(v, 2) for v in a_all)}",
                f"{s:.2f} {sorted(round(v, 2) for v in s_all)}",
                f"{a / s:.1f}x",
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
