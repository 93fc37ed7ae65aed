"""The database layer: Airflow's tables, the sidecar's own (the ledger), DAG loading and the batch writer.

Only this package runs SQL. The ledger (``_ledger``, ``_creation``, ``_phases``, ``_backfill_reads``, ``_secrets``)
owns the sidecar's rows and a backfill's lifecycle, and authorises a caller's call on the
row it loads (``load_backfill``); ``_runs`` reads and ends Airflow's
runs; ``_writer`` writes a batch of them; ``Transactions`` retries transient failures.
"""

from sidecar.store._backfill_pages import page_of_backfills
from sidecar.store._backfill_reads import (
    BackfillRecord,
    PlanRecord,
    backfill_stats,
    get_backfill,
    list_backfills,
    load_backfill,
    plan_record,
)
from sidecar.store._creation import (
    NewBackfill,
    RequestRecord,
    check_no_active_backfill,
    find_request,
    insert_backfill,
)
from sidecar.store._dags import DagCatalog, LoadedDag, latest_log_template_id
from sidecar.store._database import (
    SUPPORTED_AIRFLOW_REVISIONS,
    Database,
    DatabaseCheck,
    check_database,
    connect,
    prepare,
)
from sidecar.store._failures import (
    RETRYABLE,
    Failure,
    classify,
    error_for,
    is_database_failure,
    sqlstate_of,
)
from sidecar.store._history import backfill_run_durations, dag_run_durations, existing_runs_between
from sidecar.store._ledger import (
    TickEntry,
    advance_cursor,
    cancel_backfill,
    cancel_cancelled_by_airflow,
    claim_batch,
    complete_if_done,
    finish_writing,
    record_planned_count,
    record_write_failure,
    reopen_backfill,
    set_paused,
    tick_entries,
)
from sidecar.store._notify import (
    Delivery,
    EventKind,
    RecordedEvent,
    WebhookStatus,
    claim_deliveries,
    delivered,
    delivery_failed,
    events_after,
    record_events,
    register_backfill,
    webhook_status,
)
from sidecar.store._phases import (
    PENDING_RUNS,
    TRANSITIONS,
    AirflowClosing,
    Event,
    Phase,
    WriteFailure,
    airflow_closing,
    transition,
)
from sidecar.store._retry import RetryPolicy, Transactions
from sidecar.store._revocations import token_revoked
from sidecar.store._rows import RunContext
from sidecar.store._runs import (
    UNFINISHED_RUN_STATES,
    Slot,
    analyze_written_tables,
    count_unfinished_runs,
    fail_runs,
    has_unfinished_runs,
    run_state_counts,
    written_slots,
)
from sidecar.store._secrets import page_token_key
from sidecar.store._versions import SUPPORTED_RANGE, AirflowRowContract, Refusals
from sidecar.store._writer import (
    BatchResult,
    ExistingRun,
    decide,
    find_existing_runs,
    write_batch,
)
from sidecar.vocabulary import Disposition

__all__ = [
    "PENDING_RUNS",
    "RETRYABLE",
    "SUPPORTED_AIRFLOW_REVISIONS",
    "SUPPORTED_RANGE",
    "TRANSITIONS",
    "UNFINISHED_RUN_STATES",
    "AirflowClosing",
    "AirflowRowContract",
    "BackfillRecord",
    "BatchResult",
    "DagCatalog",
    "Database",
    "DatabaseCheck",
    "Delivery",
    "Disposition",
    "Event",
    "EventKind",
    "ExistingRun",
    "Failure",
    "LoadedDag",
    "NewBackfill",
    "Phase",
    "PlanRecord",
    "RecordedEvent",
    "Refusals",
    "RequestRecord",
    "RetryPolicy",
    "RunContext",
    "Slot",
    "TickEntry",
    "Transactions",
    "WebhookStatus",
    "WriteFailure",
    "advance_cursor",
    "airflow_closing",
    "analyze_written_tables",
    "backfill_run_durations",
    "backfill_stats",
    "cancel_backfill",
    "cancel_cancelled_by_airflow",
    "check_database",
    "check_no_active_backfill",
    "claim_batch",
    "claim_deliveries",
    "classify",
    "complete_if_done",
    "connect",
    "count_unfinished_runs",
    "dag_run_durations",
    "decide",
    "delivered",
    "delivery_failed",
    "error_for",
    "events_after",
    "existing_runs_between",
    "fail_runs",
    "find_existing_runs",
    "find_request",
    "finish_writing",
    "get_backfill",
    "has_unfinished_runs",
    "insert_backfill",
    "is_database_failure",
    "latest_log_template_id",
    "list_backfills",
    "load_backfill",
    "page_of_backfills",
    "page_token_key",
    "plan_record",
    "prepare",
    "record_events",
    "record_planned_count",
    "record_write_failure",
    "register_backfill",
    "reopen_backfill",
    "run_state_counts",
    "set_paused",
    "sqlstate_of",
    "tick_entries",
    "token_revoked",
    "transition",
    "webhook_status",
    "write_batch",
    "written_slots",
]
