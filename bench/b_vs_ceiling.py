"""Script B: the ceiling (the fastest raw ways to put the same rows into the same tables) against the sidecar's eager mode.

Ceilings, each into a fresh clone with Airflow's indexes and foreign keys in place,
one transaction, no sidecar code:

- ``server INSERT..SELECT``: every row generated inside PostgreSQL from a template
  (``generate_series`` x the DAG's tasks): no client work, no network.
- ``client COPY``: rows built in Python (ids, carriers, uuid7s) and sent with binary
  ``COPY`` (dag_run ids pre-allocated with ``nextval``), as a hand-written loader would.

The sidecar runs ``BackfillEngine.create`` in eager mode (batches of ``--batch-size``
runs, each batch and its cursor in one transaction). Prints medians and the ratio
sidecar / fastest ceiling (target: <= 1.25).

    python -m bench.b_vs_ceiling                 # 5,000 x 10 and 100,000 x 10
    python -m bench.b_vs_ceiling --quick         # 5,000 x 10 only
    python -m bench.b_vs_ceiling --batch-sizes 250,500,1000,2000,5000 --quick   # batch size sweep
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from functools import partial

import asyncpg
import uuid6

from bench._common import UTC, FreshDatabase, bench_template, days, median_of, row, sidecar_create

TASKS = 10

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
    url: str, dag_id: str, start: dt.datetime, end: dt.datetime, step: dt.timedelta
) -> float:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        version = await _version_id(conn, dag_id)
        await conn.execute(_UUID_STUB)
        sql = _SERVER_SIDE.format(tasks=TASKS).replace("uuidv7_stub()", "pg_temp.uuidv7_stub()")
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(sql, dag_id, start, end, version, step)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _client_copy(
    url: str, dag_id: str, start: dt.datetime, end: dt.datetime, step: dt.timedelta
) -> float:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=lambda data: json.loads(data[1:]),
            schema="pg_catalog",
            format="binary",
        )
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
            runs, tis, bdrs = [], [], []
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
                for t in range(TASKS):
                    task_id = f"t{t:02d}"
                    tis.append(
                        (
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
                            TASKS - t,
                            "EmptyOperator",
                            "EmptyOperator",
                            b"\x80\x05}\x94.",
                            now,
                            carrier,
                            "not_started",
                            task_id,
                            version,
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
            await conn.copy_records_to_table(
                "task_instance",
                records=tis,
                columns=[
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
                ],
            )
            await conn.copy_records_to_table(
                "backfill_dag_run",
                records=bdrs,
                columns=["backfill_id", "dag_run_id", "logical_date", "sort_ordinal"],
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


def _fresh(template: str, measure: Callable[[FreshDatabase], float]) -> float:
    with FreshDatabase(template, "b") as db:
        return measure(db)


def _server_side_sync(
    dag_id: str, start: dt.datetime, end: dt.datetime, step: dt.timedelta, db: FreshDatabase
) -> float:
    return asyncio.run(_server_side(db.asyncpg_url, dag_id, start, end, step))


def _client_copy_sync(
    dag_id: str, start: dt.datetime, end: dt.datetime, step: dt.timedelta, db: FreshDatabase
) -> float:
    return asyncio.run(_client_copy(db.asyncpg_url, dag_id, start, end, step))


def _sidecar(
    dag_id: str, start: dt.datetime, end: dt.datetime, runs: int, batch: int, db: FreshDatabase
) -> float:
    seconds, written = sidecar_create(db.asyncpg_url, dag_id, start, end, batch_size=batch)
    assert written == runs, (written, runs)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 x 10 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1000", help="comma-separated sidecar batch sizes")
    args = parser.parse_args()
    sizes = [5_000] if args.quick else [5_000, 100_000]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    template = bench_template()
    print(row("runs x 10 tasks", "method", "seconds (median)", "all", "vs fastest ceiling"))
    print(row("---", "---", "---", "---", "---"))
    for runs in sizes:
        dag_id, step = "bench_hourly_10", dt.timedelta(hours=1)
        start, end = days(dt.datetime(2000, 1, 1, tzinfo=UTC), runs, step)
        results: dict[str, tuple[float, list[float]]] = {}
        span = (dag_id, start, end, step)
        results["ceiling: server INSERT..SELECT"] = median_of(
            args.repeats, partial(_fresh, template, partial(_server_side_sync, *span))
        )
        results["ceiling: client COPY"] = median_of(
            args.repeats, partial(_fresh, template, partial(_client_copy_sync, *span))
        )
        for batch in batch_sizes:
            results[f"sidecar eager, batch {batch}"] = median_of(
                args.repeats, partial(_fresh, template, partial(_sidecar, dag_id, start, end, runs, batch))
            )
        ceiling = min(v[0] for k, v in results.items() if k.startswith("ceiling"))
        for name, (median, values) in results.items():
            print(
                row(
                    runs,
                    name,
                    f"{median:.2f}",
                    sorted(round(v, 2) for v in values),
                    f"{median / ceiling:.2f}x",
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
