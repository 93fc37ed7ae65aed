"""The database layer: Airflow's tables, the sidecar's own, DAG loading and the batch writer."""

from sidecar.store._dags import DagCatalog, LoadedDag, latest_log_template_id
from sidecar.store._database import (
    SUPPORTED_AIRFLOW_REVISIONS,
    Database,
    DatabaseCheck,
    check_database,
    connect,
    prepare,
)
from sidecar.store._revocations import token_revoked
from sidecar.store._rows import RunContext
from sidecar.store._writer import (
    BatchResult,
    Disposition,
    ExistingRun,
    decide,
    find_existing_runs,
    write_batch,
)

__all__ = [
    "SUPPORTED_AIRFLOW_REVISIONS",
    "BatchResult",
    "DagCatalog",
    "Database",
    "DatabaseCheck",
    "Disposition",
    "ExistingRun",
    "LoadedDag",
    "RunContext",
    "check_database",
    "connect",
    "decide",
    "find_existing_runs",
    "latest_log_template_id",
    "prepare",
    "token_revoked",
    "write_batch",
]
