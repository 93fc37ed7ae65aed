"""The engine's tuning, and the parts every engine operation works with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.config import WebhookSettings
from sidecar.engine._counting import MAX_RUNS_PER_BACKFILL
from sidecar.engine._lanes import LaneBudget
from sidecar.store import DagCatalog, RetryPolicy, Transactions

__all__ = ["EngineConfig", "Parts", "utcnow"]


def utcnow() -> dt.datetime:
    """The current time, aware UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of the materialiser."""

    batch_size: int = 1000
    """Slots written per transaction (fewer for wide DAGs: see ``materialize``'s task-instance
    budget). Chosen by measurement, docs/adr/0002-bulk-write-path.md."""
    lookahead: int = 2
    """Windowed mode keeps ``max_active_runs + lookahead`` runs queued or running."""
    dry_run_limit: int = 10_000
    """The most planned runs a dry run returns."""
    max_runs_per_backfill: int = MAX_RUNS_PER_BACKFILL
    """The most runs one backfill may plan; a larger range is refused before anything is written."""
    planning_workers: int = 2
    """Planning jobs (dry runs, sizing, pending slots) stepping at once, each in a worker thread."""
    planning_queue: int = 32
    """Planning jobs that may wait for a worker; more are refused ``RESOURCE_EXHAUSTED``."""
    planning_cpu_seconds: float = 10.0
    """CPU time one call's planning may use (about 18,000 slots of a cron with daylight saving)."""
    rerun_with_latest_version: bool | None = None
    """Airflow's ``[core] rerun_with_latest_version`` (None: unset), for a request that sets no
    ``run_on_latest_version`` on a DAG that sets no ``rerun_with_latest_version`` (3.3)."""
    estimate_sample: int = 200
    """Finished runs an estimate draws its durations from (the latest ones)."""
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    """Where backfill events may be sent and how (off until a secret is set)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How transactions are retried on transient database failures."""
    lane_creates: int = 2
    """Eager creates that may write in two lanes at once, each holding one more pooled
    connection (:mod:`sidecar.engine._lanes`); 0: every create writes one batch at a time."""


@dataclass(frozen=True)
class Parts:
    """What every engine operation works with (held by :class:`BackfillEngine`)."""

    tx: Transactions
    catalog: DagCatalog
    config: EngineConfig
    clock: Callable[[], dt.datetime]
    lanes: LaneBudget = field(default_factory=LaneBudget)
    """The places of :attr:`EngineConfig.lane_creates` (:mod:`sidecar.engine._lanes`)."""
