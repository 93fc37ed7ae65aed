"""Prometheus metrics of the sidecar, in one private registry.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms).
Per-backfill gauges are bounded: only active backfills carry a series, and a
backfill's series is removed when it ends.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

BACKFILLS = Gauge("sidecar_backfills", "Backfills by state.", ["state"], registry=REGISTRY)
RUNS_WRITTEN = Counter(
    "sidecar_runs_written_total", "DAG runs created or cleared for reprocessing.", registry=REGISTRY
)
SLOTS_WRITTEN = Counter(
    "sidecar_slots_written_total", "Plan slots written (runs or skip reasons).", registry=REGISTRY
)
BATCH_SECONDS = Histogram(
    "sidecar_batch_seconds",
    "Latency of one batch transaction (rows written and cursor advanced).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "sidecar_tick_seconds",
    "Latency of one tick (top up every backfill, complete finished ones).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DATABASE_ERRORS = Counter(
    "sidecar_database_errors_total", "Database failures by class (SQLSTATE).", ["failure"], registry=REGISTRY
)
SET_ASIDE = Counter(
    "sidecar_backfills_set_aside_total",
    "Backfills set aside: a batch failed for a reason a retry would not cure.",
    ["reason"],
    registry=REGISTRY,
)
WRITE_RETRIES = Counter(
    "sidecar_backfill_write_retries_total",
    "Ticks on which writing a backfill's runs failed transiently (retried on the next tick).",
    ["reason"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "sidecar_backfill_queued_runs",
    "Queued runs per active backfill.",
    ["backfill_id", "dag_id"],
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "sidecar_rpc_seconds",
    "gRPC call latency by method and status code.",
    ["method", "code"],
    registry=REGISTRY,
)

_KNOWN_STATES = ("active", "paused", "completed", "cancelled")
_queue_series: set[tuple[str, str]] = set()


def set_backfill_counts(counts: dict[str, int]) -> None:
    """Replace the per-state backfill gauge."""
    for state in _KNOWN_STATES:
        BACKFILLS.labels(state=state).set(counts.get(state, 0))


def set_queue_depths(depths: Iterable[tuple[int, str, int]]) -> None:
    """Replace the per-backfill queued-runs gauge: ``(backfill_id, dag_id, queued)`` of active backfills."""
    seen: set[tuple[str, str]] = set()
    for backfill_id, dag_id, queued in depths:
        key = (str(backfill_id), dag_id)
        QUEUE_DEPTH.labels(*key).set(queued)
        seen.add(key)
    for key in _queue_series - seen:
        QUEUE_DEPTH.remove(*key)
    _queue_series.clear()
    _queue_series.update(seen)


def render() -> bytes:
    """The exposition text of every metric."""
    return generate_latest(REGISTRY)
