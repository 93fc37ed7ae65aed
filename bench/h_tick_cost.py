"""Script H: the Tick's own cost per call with 100,000 runs queued, against 1,000 queued (one run).

The tick runs once per scheduler loop (the shim's Tick) and every ``tick_interval`` in
``serve``: its cost must be that of what changed, not of the backfill's size (issue 14: a
full count of unfinished runs cost 52 ms a tick with 100,000 queued). Two shapes, each at
1,000 and 100,000 runs, on a fresh database each, in this process:

- **eager, all written**: an eager backfill (``max_failed_runs`` set, so the failed-runs
  check runs too) whose runs are all queued; the tick asks whether any is left and
  whether the failed-runs limit is reached.
- **windowed, mid-way**: a windowed backfill whose window is full, beside as many finished
  runs of it; the tick counts the window's unfinished runs and writes nothing.

Runs beyond the first 1,000 are copies of its first run inserted by SQL (earlier dates),
then ``VACUUM ANALYZE``: the tick reads ``dag_run`` as it would after a real create.
The two sizes tick alternately in one process (load on the machine falls on both alike).
Printed: the median tick (of ``--ticks``), the ratio 100,000 / 1,000, the statements a
tick sends and the slowest with its median time.

    python -m bench.h_tick_cost              # 1,000 vs 100,000 runs, 50 ticks each
    python -m bench.h_tick_cost --ticks 20 --large 20000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from collections import defaultdict
from typing import Any

import psycopg2
from sqlalchemy import event

from bench._common import UTC, FreshDatabase, bench_template, row
from sidecar.engine import BackfillEngine, BackfillSpec, BackfillView, Controls, EngineConfig, Mode
from sidecar.store import connect, prepare

DAG = "bench_hourly_10"
START = dt.datetime(2000, 1, 1, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
SEED_RUNS = 1_000


def _add_runs(psycopg2_url: str, backfill_id: int, extra: int, state: str) -> None:
    """``extra`` more runs of the backfill in ``state``: copies of its first run, earlier dates."""
    dsn = psycopg2_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as sql:
        sql.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'dag_run' "
            "AND table_schema = 'public' AND column_name NOT IN "
            "('id', 'run_id', 'logical_date', 'state', 'backfill_id')"
        )
        copied = ", ".join(name for (name,) in sql.fetchall())
        if extra > 0:
            sql.execute(
                f"INSERT INTO dag_run (run_id, logical_date, state, backfill_id, {copied}) "
                f"SELECT 'extra_' || g, logical_date - g * interval '1 hour', %s, backfill_id, {copied} "
                "FROM dag_run, generate_series(1, %s) AS g "
                "WHERE backfill_id = %s AND logical_date = %s",
                (state, extra, backfill_id, START),
            )
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as sql:
            sql.execute("VACUUM ANALYZE dag_run")
    finally:
        conn.close()


class _Statements:
    """Time spent in each statement the engine sends (by its SQL text)."""

    def __init__(self, engine: Any) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self._engine = engine
        self._started: list[float] = []

    def __enter__(self) -> _Statements:
        event.listen(self._engine, "before_cursor_execute", self._before)
        event.listen(self._engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._before)
        event.remove(self._engine, "after_cursor_execute", self._after)

    def _before(self, *args: Any) -> None:
        self._started.append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.times[" ".join(statement.split())].append(time.perf_counter() - self._started.pop())


async def _engine_with(db: FreshDatabase, mode: Mode, size: int) -> tuple[Any, BackfillEngine]:
    """An engine on ``db`` with one backfill of ``size`` runs of the shape ``mode``."""
    database = connect(db.asyncpg_url)
    await prepare(database)
    engine = BackfillEngine(database, EngineConfig())
    if mode is Mode.EAGER:
        end = START + (SEED_RUNS - 1) * HOUR
        controls = Controls(max_failed_runs=5)
    else:
        end = START + (size + 10_000) * HOUR
        controls = Controls()
    spec = BackfillSpec(
        dag_id=DAG, from_date=START, to_date=end, max_active_runs=10, mode=mode, controls=controls
    )
    view = await engine.create(spec)
    assert isinstance(view, BackfillView)
    if mode is Mode.EAGER:  # every run queued
        _add_runs(db.psycopg2_url, view.id, size - SEED_RUNS, "queued")
    else:  # the window full, beside ``size`` finished runs
        _add_runs(db.psycopg2_url, view.id, size, "success")
    await engine.tick()  # connections and statements warm, as in a running server
    return database, engine


async def _compare(
    small: FreshDatabase, large: FreshDatabase, mode: Mode, size: int, ticks: int
) -> list[Any]:
    """Ticks on the two databases alternately: ``(median s, statements a tick, slowest, its median)`` each."""
    engines = [await _engine_with(small, mode, SEED_RUNS), await _engine_with(large, mode, size)]
    try:
        watched = [_Statements(database.engine.sync_engine) for database, _ in engines]
        times: list[list[float]] = [[], []]
        for statements in watched:
            statements.__enter__()
        for _ in range(ticks):
            for i, (_, engine) in enumerate(engines):
                started = time.perf_counter()
                result = await engine.tick()
                times[i].append(time.perf_counter() - started)
                assert result.runs_written == 0 and result.backfills_completed == 0, result
        for statements in watched:
            statements.__exit__()
        out = []
        for i, statements in enumerate(watched):
            sent = sum(len(v) for v in statements.times.values()) / ticks
            slowest = max(statements.times.items(), key=lambda item: statistics.median(item[1]))
            out.append((statistics.median(times[i]), sent, slowest[0], statistics.median(slowest[1])))
        return out
    finally:
        for database, engine in engines:
            await engine.close()
            await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    template = bench_template()
    print(row("measure", "value", "how"))
    print(row("---", "---", "---"), flush=True)
    for mode, shape in ((Mode.EAGER, "eager, all queued"), (Mode.WINDOWED, "windowed, window full")):
        with FreshDatabase(template, "hs") as small, FreshDatabase(template, "hl") as large:
            results = asyncio.run(_compare(small, large, mode, args.large, args.ticks))
        for size, (tick, sent, statement, statement_s) in zip((SEED_RUNS, args.large), results, strict=True):
            print(
                row(
                    f"tick, {shape}, {size:,} runs",
                    f"{tick * 1000:.2f} ms",
                    f"median of {args.ticks} ticks (alternating with the other size); {sent:.0f} "
                    f"statements a tick, the slowest {statement_s * 1000:.2f} ms: `{statement[:70]}...`",
                ),
                flush=True,
            )
        ratio = results[1][0] / results[0][0]
        print(
            row(f"ratio tick {args.large:,} / {SEED_RUNS:,} runs ({shape})", f"{ratio:.2f}x", ""), flush=True
        )


if __name__ == "__main__":
    main()
