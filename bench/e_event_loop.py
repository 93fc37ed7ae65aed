"""Script E: event-loop latency while worst-case dry runs plan (issue 10, "bounded cost per call").

A real ``airflow-sidecar serve`` process answers a trivial RPC (the gRPC health check: no
database, only the event loop) in phases: idle, then while 10 concurrent dry runs of a
century of an hourly DAG in Europe/Amsterdam (every slot stepped through croniter, the
worst case of planning) are in flight. Idle and loaded phases alternate, ``--repeats``
times; each round prints both p99s, and the median of the rounds' loaded/idle p99 ratios
is the figure (target: within 2x). The dry runs are cancelled at the end of each loaded
phase, which also checks that the server's planning workers stop with their callers.

    python -m bench.e_event_loop               # 5 rounds of 300 calls per phase
    python -m bench.e_event_loop --repeats 5 --calls 500
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench._common import UTC, FreshDatabase, bench_template, row
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.support.processes import start_sidecar

DAG = "bench_hourly_10_amsterdam"
CONCURRENT = 10


def century_dry_run() -> pb.CreateBackfillRequest:
    """A dry run of a century of the hourly Amsterdam DAG (876,000 slots, each stepped)."""
    backfill = pb.Backfill(dag_id=DAG)
    backfill.from_date.FromDatetime(dt.datetime(1926, 1, 1, tzinfo=UTC))
    backfill.to_date.FromDatetime(dt.datetime(2025, 12, 31, tzinfo=UTC))
    return pb.CreateBackfillRequest(backfill=backfill, validate_only=True)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[-1]


async def latencies(stub: health_pb2_grpc.HealthStub, calls: int) -> list[float]:
    """Seconds each of ``calls`` sequential health checks took."""
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
        out.append(time.perf_counter() - started)
    return out


async def measure(target: str, repeats: int, calls: int) -> list[tuple[float, float, float, float]]:
    """``(idle p99, loaded p99, idle median, loaded median)`` seconds for each round."""
    rounds = []
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        backfills = backfill_pb2_grpc.BackfillServiceStub(channel)
        await latencies(health, 100)  # warm up
        for _ in range(repeats):
            idle = await latencies(health, calls)
            dry_runs = [backfills.CreateBackfill(century_dry_run(), timeout=600) for _ in range(CONCURRENT)]
            await asyncio.sleep(0.5)  # the planning workers are busy from here on
            loaded = await latencies(health, calls)
            for call in dry_runs:
                call.cancel()  # the caller goes: the server's workers stop within a step
            outcomes = await asyncio.gather(*dry_runs, return_exceptions=True)
            unexpected = [o for o in outcomes if not isinstance(o, asyncio.CancelledError)]
            if unexpected:  # a dry run that failed or finished did not load the server
                raise RuntimeError(f"dry runs ended before they were cancelled: {unexpected[:1]}")
            await asyncio.sleep(1.0)
            rounds.append((p99(idle), p99(loaded), statistics.median(idle), statistics.median(loaded)))
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="idle/loaded rounds (default 5)")
    parser.add_argument("--calls", type=int, default=300, help="health checks per phase (default 300)")
    args = parser.parse_args()
    template = bench_template()
    with FreshDatabase(template, "loop") as db, tempfile.TemporaryDirectory() as logs:
        # Dry runs unlimited for the benchmark: it measures planning, not the rate limit.
        auth = ("--no-auth", "--dry-runs-per-minute", "0")
        process, target = start_sidecar(db.asyncpg_url, Path(logs), auth_args=auth)
        try:
            rounds = asyncio.run(measure(target, args.repeats, args.calls))
        finally:
            process.stop()
    print(
        row(
            "round", "idle p99 (ms)", f"{CONCURRENT} dry runs p99 (ms)", "p99 ratio", "idle p50", "loaded p50"
        )
    )
    print(row("---", "---", "---", "---", "---", "---"))
    for number, (idle, loaded, idle_mid, loaded_mid) in enumerate(rounds, 1):
        cells = (f"{idle * 1e3:.2f}", f"{loaded * 1e3:.2f}", f"{loaded / idle:.2f}x")
        print(row(number, *cells, f"{idle_mid * 1e3:.2f}", f"{loaded_mid * 1e3:.2f}"))
    ratio = statistics.median(loaded / idle for idle, loaded, _, _ in rounds)
    print(f"\nmedian p99 ratio, loaded vs idle: {ratio:.2f}x (target: within 2x)")
    print(f"machine load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
