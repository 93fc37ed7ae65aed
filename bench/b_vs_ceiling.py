"""Script B: the ceiling (the fastest raw ways to put the same rows into the same tables) against the sidecar's eager mode.

Ceilings, each into a fresh clone with Airflow's indexes and foreign keys in place,
one transaction (the parallel one: three), no sidecar code:

- ``server INSERT..SELECT``: every row generated inside PostgreSQL from a template
  (``generate_series`` x the DAG's tasks): no client work, no network.
- ``client COPY``: rows built in Python (ids, carriers, uuid7s) and sent with binary
  ``COPY`` (dag_run ids pre-allocated with ``nextval``), as a hand-written loader would;
  the task instances are built while the ``COPY`` sends them (asyncpg consumes an iterator
  lazily), as the sidecar's are. ``dag_run`` is analysed between its rows and the task
  instances' when its statistics count fewer than a quarter of the new runs (as the
  sidecar's batches do), else the task instances' foreign-key checks walk the DAG's runs
  (quadratic on an empty database).
- ``parallel COPY``: the same loader with the task instances (85% of the work) on two
  connections at once, each streaming the task instances of half of the runs in its own
  transaction, after the runs and ``backfill_dag_run`` committed in one: two PostgreSQL
  backends at work, as many as this 2-core machine has (and as the sidecar's two lanes).

The sidecar runs ``BackfillEngine.create`` in eager mode (batches of ``--batch-sizes``
runs, each batch and its cursor in one transaction; two in flight, ADR 0014), on an engine
warmed up as ``serve`` warms itself at start (its statements compiled on one connection). Each case runs on an empty database
and on one with history (20,000 earlier runs x 10 tasks of ``bench_hourly_10``, vacuumed
and analysed, as autovacuum leaves a real deployment). The variants are interleaved: each
round measures every variant once, in alternating order, on fresh clones; the table shows
each variant's median over ``--pairs`` rounds and its ratio to the fastest ceiling's
median, plus the median of the per-round ratios (target: <= 1.25).

    python -m bench.b_vs_ceiling                                  # quick: 1,000 and 5,000 x 10
    python -m bench.b_vs_ceiling --sizes 1000,5000,20000,100000 --tasks 10,50   # everything
    python -m bench.b_vs_ceiling --sizes 5000 --history 0 --batch-sizes 500,1000,2000   # sweep
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import asyncpg
import uuid6

from bench._common import UTC, FreshDatabase, bench_template, days, row, sidecar_create
from tests.support.postgres import asyncpg_url, drop_database, fresh_airflow_database

#: The DAG of each task count: hourly (10 tasks) and daily (50 tasks) runs, chained EmptyOperators.
DAGS = {10: ("bench_hourly_10", dt.timedelta(hours=1)), 50: ("bench_daily_50", dt.timedelta(days=1))}
#: The first logical date of every measured backfill; history lies before it.
START = dt.datetime(2000, 1, 1, tzinfo=UTC)

_SERVER_SIDE = """
WITH bf AS (
    INSERT INTO backfill (dag_id, from_date, to_date, dag_run_conf, is_paused, reprocess_behavior,
                          max_active_runs, created_at, updated_at)
    VALUES ($1, $2, $3, '{{}}', false, 'none', 10, now(), now()) RETURNING id
), runs AS (
    INSERT INTO dag_run (dag_id, queued_at, logical_date, state, run_id, run_type, triggered_by, conf,
                         data_interval_start, data_interval_end, run_after, log_template_id, created_at,
                         updated_at, clear_number, backfill_id, span_status, created_dag_version_id,
                         context_carrier)
    SELECT $1, now(), d, 'queued', 'backfill__' || to_char(d AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS+00:00'),
           'backfill', 'BACKFILL', '{{}}', d, d, d, (SELECT max(id) FROM log_template), now(), now(), 0,
           (SELECT id FROM bf), 'not_started', $4,
           jsonb_build_object('__var', jsonb_build_object('traceparent',
               '00-' || md5(random()::text) || '-' || left(md5(random()::text), 16) || '-00'), '__type', 'dict')
    FROM generate_series($2::timestamptz, $3::timestamptz, $5::interval) AS d
    RETURNING id, run_id, logical_date, context_carrier, backfill_id
), tis AS (
    INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, try_number, max_tries, hostname,
                               unixname, pool, pool_slots, queue, priority_weight, operator,
                               custom_operator_name, executor_config, updated_at, context_carrier,
                               span_status, task_display_name, dag_version_id)
    SELECT uuidv7_stub(), t.task_id, $1, r.run_id, -1, 0, 0, '', 'root', 'default_pool', 1, 'default',
           t.weight, 'EmptyOperator', 'EmptyOperator', '\\x80057d942e'::bytea, now(), r.context_carrier,
           'not_started', t.task_id, $4
    FROM runs r CROSS JOIN (SELECT 't' || lpad(i::text, 2, '0') AS task_id, {tasks} - i AS weight
                            FROM generate_series(0, {tasks} - 1) AS i) AS t
)
INSERT INTO backfill_dag_run (backfill_id, dag_run_id, logical_date, sort_ordinal)
SELECT backfill_id, id, logical_date, row_number() OVER (ORDER BY logical_date) FROM runs
"""

_UUID_STUB = (
    "CREATE OR REPLACE FUNCTION pg_temp.uuidv7_stub() RETURNS uuid LANGUAGE sql AS "
    "$$SELECT gen_random_uuid()$$"
)


async def _version_id(conn: asyncpg.Connection, dag_id: str) -> object:
    return await conn.fetchval(
        "SELECT id FROM dag_version WHERE dag_id = $1 ORDER BY version_number DESC LIMIT 1", dag_id
    )


async def _server_side(
    url: str, dag_id: str, start: dt.datetime, end: dt.datetime, step: dt.timedelta, tasks: int
) -> float:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        version = await _version_id(conn, dag_id)
        await conn.execute(_UUID_STUB)
        sql = _SERVER_SIDE.format(tasks=tasks).replace("uuidv7_stub()", "pg_temp.uuidv7_stub()")
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(sql, dag_id, start, end, version, step)
        return time.perf_counter() - started
    finally:
        await conn.close()


#: The task-instance columns the client loaders write.
_TI_COLUMNS = [
    "id",
    "task_id",
    "dag_id",
    "run_id",
    "map_index",
    "try_number",
    "max_tries",
    "hostname",
    "unixname",
    "pool",
    "pool_slots",
    "queue",
    "priority_weight",
    "operator",
    "custom_operator_name",
    "executor_config",
    "updated_at",
    "context_carrier",
    "span_status",
    "task_display_name",
    "dag_version_id",
]


async def _loader_connection(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),
        decoder=lambda data: json.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    return conn


def _task_instances(
    runs: list[tuple[Any, ...]], tasks: int, now: dt.datetime, version: object
) -> Iterator[tuple[object, ...]]:
    """The task instances of ``runs`` (``dag_run`` records), built as the ``COPY`` sends them."""
    for run in runs:
        dag_id, run_id, carrier = run[1], run[5], run[19]
        for t in range(tasks):
            task_id = f"t{t:02d}"
            yield (
                uuid6.uuid7(),
                task_id,
                dag_id,
                run_id,
                -1,
                0,
                0,
                "",
                "root",
                "default_pool",
                1,
                "default",
                tasks - t,
                "EmptyOperator",
                "EmptyOperator",
                b"\x80\x05}\x94.",
                now,
                carrier,
                "not_started",
                task_id,
                version,
            )


async def _copy_in_parallel(
    conns: list[asyncpg.Connection],
    runs: list[tuple[Any, ...]],
    tasks: int,
    now: dt.datetime,
    version: object,
) -> None:
    """The runs' task instances, split by run into one transaction per connection, all at once."""
    share = -(-len(runs) // len(conns))

    async def one(conn: asyncpg.Connection, part: list[tuple[Any, ...]]) -> None:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "task_instance", records=_task_instances(part, tasks, now, version), columns=_TI_COLUMNS
            )

    await asyncio.gather(*(one(c, runs[i * share : (i + 1) * share]) for i, c in enumerate(conns)))


async def _client_copy(
    url: str,
    dag_id: str,
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
    tasks: int,
    connections: int = 1,
) -> float:
    """The client ``COPY`` ceiling; with ``connections`` > 1 the parallel one.

    In parallel, the runs and ``backfill_dag_run`` commit first (one transaction), then the
    task instances go in ``connections`` transactions at once, split by run.
    """
    conn = await _loader_connection(url)
    more = [await _loader_connection(url) for _ in range(connections - 1)]
    try:
        version = await _version_id(conn, dag_id)
        started = time.perf_counter()
        async with conn.transaction():
            now = dt.datetime.now(UTC)
            backfill_id = await conn.fetchval(
                "INSERT INTO backfill (dag_id, from_date, to_date, dag_run_conf, is_paused, reprocess_behavior,"
                " max_active_runs, created_at, updated_at) VALUES ($1, $2, $3, '{}', false, 'none', 10, $4, $4)"
                " RETURNING id",
                dag_id,
                start,
                end,
                now,
            )
            log_template = await conn.fetchval("SELECT max(id) FROM log_template")
            count = int((end - start) / step) + 1
            ids = [
                r[0]
                for r in await conn.fetch(
                    "SELECT nextval('dag_run_id_seq') FROM generate_series(1, $1)", count
                )
            ]
            runs, bdrs = [], []
            for i in range(count):
                d = start + step * i
                run_id = "backfill__" + d.isoformat()
                carrier = json.dumps(
                    {
                        "__var": {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"},
                        "__type": "dict",
                    }
                )
                runs.append(
                    (
                        ids[i],
                        dag_id,
                        now,
                        d,
                        "queued",
                        run_id,
                        "backfill",
                        "BACKFILL",
                        "{}",
                        d,
                        d,
                        d,
                        log_template,
                        now,
                        now,
                        0,
                        backfill_id,
                        "not_started",
                        version,
                        carrier,
                    )
                )
                bdrs.append((backfill_id, ids[i], d, i + 1))
            await conn.copy_records_to_table(
                "dag_run",
                records=runs,
                columns=[
                    "id",
                    "dag_id",
                    "queued_at",
                    "logical_date",
                    "state",
                    "run_id",
                    "run_type",
                    "triggered_by",
                    "conf",
                    "data_interval_start",
                    "data_interval_end",
                    "run_after",
                    "log_template_id",
                    "created_at",
                    "updated_at",
                    "clear_number",
                    "backfill_id",
                    "span_status",
                    "created_dag_version_id",
                    "context_carrier",
                ],
            )
            # A loader that knows the planner: the task instances' foreign-key checks are
            # planned at their first row; on a never-analysed dag_run they take its (dag_id)
            # index and walk every run of the DAG per row (ADR 8). The sidecar does the same.
            counted = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'dag_run'::regclass")
            if count > 4 * max(0, counted):
                await conn.execute("ANALYZE dag_run")
            if not more:
                await conn.copy_records_to_table(
                    "task_instance",
                    records=_task_instances(runs, tasks, now, version),
                    columns=_TI_COLUMNS,
                )
            await conn.copy_records_to_table(
                "backfill_dag_run",
                records=bdrs,
                columns=["backfill_id", "dag_run_id", "logical_date", "sort_ordinal"],
            )
        if more:
            await _copy_in_parallel([conn, *more], runs, tasks, now, version)
        return time.perf_counter() - started
    finally:
        for c in (conn, *more):
            await c.close()


Measure = Callable[[str], float]


def _server_side_sync(span: tuple[str, dt.datetime, dt.datetime, dt.timedelta, int], url: str) -> float:
    return asyncio.run(_server_side(url, *span))


def _client_copy_sync(span: tuple[str, dt.datetime, dt.datetime, dt.timedelta, int], url: str) -> float:
    return asyncio.run(_client_copy(url, *span))


def _parallel_copy_sync(span: tuple[str, dt.datetime, dt.datetime, dt.timedelta, int], url: str) -> float:
    return asyncio.run(_client_copy(url, *span, connections=2))


def _sidecar(dag_id: str, start: dt.datetime, end: dt.datetime, runs: int, batch: int, url: str) -> float:
    seconds, written = sidecar_create(url, dag_id, start, end, batch_size=batch)
    assert written == runs, (written, runs)
    return seconds


def _in_fresh_clone(template: str, measure: Measure) -> float:
    with FreshDatabase(template, "b") as db:
        return measure(db.asyncpg_url)


def history_template(template: str, runs: int) -> str:
    """A clone of ``template`` with ``runs`` earlier hourly runs x 10 tasks, vacuumed and analysed."""
    name = f"sidecar_bench_history_{os.getpid()}"
    fresh_airflow_database(name, template=template)
    step = dt.timedelta(hours=1)
    start, end = days(START - step * runs, runs, step)

    async def fill() -> None:
        await _server_side(asyncpg_url(name), "bench_hourly_10", start, end, step, 10)
        conn = await asyncpg.connect(asyncpg_url(name).replace("postgresql+asyncpg://", "postgresql://"))
        try:  # finished history: the backfill completed, its runs and tasks succeeded
            await conn.execute("UPDATE backfill SET completed_at = now()")
            await conn.execute("UPDATE dag_run SET state = 'success', start_date = now(), end_date = now()")
            await conn.execute("UPDATE task_instance SET state = 'success', try_number = 1")
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    asyncio.run(fill())
    return name


def interleaved(template: str, variants: dict[str, Measure], pairs: int) -> dict[str, list[float]]:
    """Each variant measured ``pairs`` times, one round at a time, the order reversed every other round."""
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(pairs):
        for name in names if round_ % 2 == 0 else reversed(names):
            seconds[name].append(_in_fresh_clone(template, variants[name]))
    return seconds


def _report(case: str, seconds: dict[str, list[float]]) -> None:
    ceilings = [name for name in seconds if name.startswith("ceiling")]
    fastest = min(statistics.median(seconds[name]) for name in ceilings)
    rounds = len(next(iter(seconds.values())))
    per_round_best = [min(seconds[name][i] for name in ceilings) for i in range(rounds)]
    for name, values in seconds.items():
        median = statistics.median(values)
        round_ratio = statistics.median(v / best for v, best in zip(values, per_round_best, strict=True))
        print(
            row(
                case,
                name,
                f"{median:.2f}",
                sorted(round(v, 2) for v in values),
                f"{median / fastest:.2f}x",
                f"{round_ratio:.2f}x",
            ),
            flush=True,
        )


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="runs per backfill, comma-separated")
    parser.add_argument("--tasks", default="10", help="tasks per run: 10 and/or 50")
    parser.add_argument(
        "--history", default="0,20000", help="earlier runs in the database, comma-separated (0: empty)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="interleaved rounds per case (>= 3)")
    parser.add_argument("--batch-sizes", default="1000", help="comma-separated sidecar batch sizes")
    args = parser.parse_args()
    base = bench_template()
    templates: dict[int, str] = {}
    try:
        for history in _ints(args.history):
            templates[history] = history_template(base, history) if history else base
        print(
            row("case", "method", "seconds (median)", "all", "vs fastest ceiling", "median of round ratios")
        )
        print(row("---", "---", "---", "---", "---", "---"))
        for tasks in _ints(args.tasks):
            dag_id, step = DAGS[tasks]
            for runs in _ints(args.sizes):
                start, end = days(START, runs, step)
                span = (dag_id, start, end, step, tasks)
                variants: dict[str, Measure] = {
                    "ceiling: server INSERT..SELECT": partial(_server_side_sync, span),
                    "ceiling: client COPY": partial(_client_copy_sync, span),
                    "ceiling: parallel COPY (2 connections)": partial(_parallel_copy_sync, span),
                }
                for batch in _ints(args.batch_sizes):
                    variants[f"sidecar eager, batch {batch}"] = partial(
                        _sidecar, dag_id, start, end, runs, batch
                    )
                for history, template in templates.items():
                    case = f"{runs:,} x {tasks}, history {history:,}"
                    _report(case, interleaved(template, variants, args.pairs))
    finally:
        for history, template in templates.items():
            if history:
                drop_database(template)


if __name__ == "__main__":
    main()
