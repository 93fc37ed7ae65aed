"""Operations: Prometheus metrics, structured logs, OpenTelemetry traces, health and readiness probes."""

from sidecar.observability._http import OpsServer
from sidecar.observability._logging import (
    CORRELATION_KEY,
    JsonFormatter,
    configure_logging,
    log_context,
    log_failure,
    logs_withheld,
)
from sidecar.observability._metrics import (
    BATCH_SECONDS,
    DATABASE_ERRORS,
    REGISTRY,
    RPC_SECONDS,
    RUNS_WRITTEN,
    SET_ASIDE,
    SLOTS_WRITTEN,
    TICK_SECONDS,
    WRITE_RETRIES,
    render,
    set_backfill_counts,
    set_queue_depths,
)
from sidecar.observability._tracing import instrument_database, server_interceptors, setup_tracing

__all__ = [
    "BATCH_SECONDS",
    "CORRELATION_KEY",
    "DATABASE_ERRORS",
    "REGISTRY",
    "RPC_SECONDS",
    "RUNS_WRITTEN",
    "SET_ASIDE",
    "SLOTS_WRITTEN",
    "TICK_SECONDS",
    "WRITE_RETRIES",
    "JsonFormatter",
    "OpsServer",
    "configure_logging",
    "instrument_database",
    "log_context",
    "log_failure",
    "logs_withheld",
    "render",
    "server_interceptors",
    "set_backfill_counts",
    "set_queue_depths",
    "setup_tracing",
]
