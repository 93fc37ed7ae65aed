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
        "parity_partitioned_hourly": "CronPartitionTimetable is new in 3.2",
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


#: Whether the sidecar writes partitioned backfills on the minor under test (3.3's rules);
#: on 3.2 it refuses them by name (``sidecar.store._versions``: ``partitions_not_yet``).
WRITES_PARTITIONS = AIRFLOW_MINOR not in ("3.1", "3.2")


def partitions(cases: Iterable[Request], *, written: bool) -> tuple[Request, ...]:
    """``cases`` (of partitioned DAGs) if the sidecar writes them (``written``) or refuses them."""
    return present(cases) if written == WRITES_PARTITIONS else ()


#: The exception classes each minor's ``_create_backfill`` raises for the validation cases.
_CHECKS_3_3 = frozenset(
    {
        "DagNotFound",
        "DagRunTypeNotAllowed",
        "DagNonPeriodicScheduleException",
        "AlreadyRunningBackfill",
        "InvalidBackfillDateRange",
        "InvalidBackfillDate",
        "InvalidBackfillDirection",
        "InvalidReprocessBehavior",
        "InvalidBackfillConf",
        "NoBackfillRunsToCreate",
    }
)
#: 3.2: no range check (an empty range is a bare RuntimeError), "no schedule" for None only.
_CHECKS_3_2 = (
    _CHECKS_3_3 - {"DagNonPeriodicScheduleException", "InvalidBackfillDateRange", "NoBackfillRunsToCreate"}
) | {"DagNoScheduleException", "RuntimeError"}
AIRFLOW_CHECKS: dict[str, frozenset[str]] = {
    "3.3": _CHECKS_3_3,
    "3.2": _CHECKS_3_2,
    # 3.1: no allowed_run_types, the conf checked by create_dagrun, and an empty range is
    # created, not refused.
    "3.1": (_CHECKS_3_2 - {"DagRunTypeNotAllowed", "InvalidBackfillConf", "RuntimeError"})
    | {"ParamValidationError"},
}

#: Airflow 3.1 and 3.2 write a ``backfill`` row for an empty range (3.1 keeps it as a backfill
#: of no runs, 3.2 raises after committing it); the sidecar refuses the request and writes
#: nothing, so the row diff leaves Airflow's runless backfills aside on these minors.
WRITES_EMPTY_BACKFILLS = AIRFLOW_MINOR in ("3.1", "3.2")
