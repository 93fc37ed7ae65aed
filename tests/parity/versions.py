"""What the parity corpus holds on the Airflow minor under test (``SIDECAR_TEST_AIRFLOW``).

The corpus (``tests/parity/dags/parity_corpus.py``) declares a DAG only where its Airflow
has the feature (it checks the feature itself, inside Airflow's DAG processor); the cases of
the DAGs a minor cannot declare leave the script here, by the same list.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.parity.harness import Request
from tests.support.airflow import AIRFLOW_VERSION

AIRFLOW_MINOR = ".".join(AIRFLOW_VERSION.split(".")[:2])

#: Corpus DAGs an older minor cannot declare, and why.
MISSING_DAGS: dict[str, dict[str, str]] = {
    "3.1": {
        "parity_partitioned": "CronPartitionTimetable is new in 3.2",
        "parity_no_backfill": "allowed_run_types is new in 3.2",
        "parity_pinned_version": "rerun_with_latest_version is new in 3.3",
        "parity_deadline": "3.1's DeadlineAlert takes no SyncCallback",
    },
    "3.2": {"parity_pinned_version": "rerun_with_latest_version is new in 3.3"},
}


def present(cases: Iterable[Request]) -> tuple[Request, ...]:
    """The cases whose DAG the Airflow under test can declare."""
    missing = MISSING_DAGS.get(AIRFLOW_MINOR, {})
    return tuple(case for case in cases if case.dag_id not in missing)
