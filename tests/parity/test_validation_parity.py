"""Validation parity: each request Airflow 3.3.2 refuses, the sidecar refuses the same way.

The same requests (:data:`tests.parity.cases.VALIDATION_CASES`) go to Airflow's
``_create_backfill`` and to the sidecar, on identical databases, in the same order (some
fail two checks at once, which pins the order of the checks). For each: Airflow's
exception class maps to one sidecar error class, the messages are equal, the sidecar names
the request field at fault, and the error maps to the expected gRPC status. Where Airflow
is wrong (:data:`tests.parity.cases.BETTER_CASES`) the sidecar refuses what Airflow
accepts (docs/adr/0003-parity.md).
"""

from __future__ import annotations

import grpc
import pytest

from sidecar import errors
from sidecar.api._errors import status_code_for
from tests.parity.cases import BETTER_CASES, VALIDATION_CASES
from tests.parity.conftest import ParityRun
from tests.parity.harness import Request
from tests.parity.versions import AIRFLOW_CHECKS, AIRFLOW_MINOR, WRITES_EMPTY_BACKFILLS

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

#: Airflow's exception class -> the sidecar's error class and its gRPC status.
EQUIVALENT: dict[str, tuple[type[errors.SidecarError], grpc.StatusCode]] = {
    "DagNotFound": (errors.DagNotFound, grpc.StatusCode.NOT_FOUND),
    "DagRunTypeNotAllowed": (errors.BackfillNotAllowed, grpc.StatusCode.FAILED_PRECONDITION),
    "DagNonPeriodicScheduleException": (errors.NonPeriodicSchedule, grpc.StatusCode.FAILED_PRECONDITION),
    "AlreadyRunningBackfill": (errors.BackfillAlreadyRunning, grpc.StatusCode.ALREADY_EXISTS),
    "InvalidBackfillDateRange": (errors.InvalidDateRange, grpc.StatusCode.INVALID_ARGUMENT),
    "InvalidBackfillDate": (errors.FutureDateRange, grpc.StatusCode.INVALID_ARGUMENT),
    "InvalidBackfillDirection": (errors.InvalidDirection, grpc.StatusCode.INVALID_ARGUMENT),
    "InvalidReprocessBehavior": (errors.InvalidReprocess, grpc.StatusCode.INVALID_ARGUMENT),
    "InvalidBackfillConf": (errors.InvalidConf, grpc.StatusCode.INVALID_ARGUMENT),
    "NoBackfillRunsToCreate": (errors.NoRunsToCreate, grpc.StatusCode.INVALID_ARGUMENT),
    # Airflow 3.1 and 3.2 (tests/parity/versions.py):
    "DagNoScheduleException": (errors.NonPeriodicSchedule, grpc.StatusCode.FAILED_PRECONDITION),
    "RuntimeError": (errors.NoRunsToCreate, grpc.StatusCode.INVALID_ARGUMENT),  # 3.2: an empty range
    "ParamValidationError": (errors.InvalidConf, grpc.StatusCode.INVALID_ARGUMENT),  # 3.1: create_dagrun
}


def test_every_check_of_airflow_is_exercised(parity_run: ParityRun) -> None:
    raised = {r["error"][0] for r in parity_run.airflow.results.values() if "error" in r}
    assert raised == AIRFLOW_CHECKS[AIRFLOW_MINOR]


@pytest.mark.parametrize("case", VALIDATION_CASES, ids=lambda c: c.name)
def test_same_refusal_as_airflow(parity_run: ParityRun, case: Request) -> None:
    airflow = parity_run.airflow.results[case.name]
    sidecar = parity_run.sidecar.results[case.name]
    if "backfill_id" in airflow and airflow["runs"] == 0 and WRITES_EMPTY_BACKFILLS:
        # Airflow 3.1 creates a backfill of no runs (an empty or reversed range); the sidecar
        # refuses it as 3.2 words it, and writes nothing.
        assert sidecar["error"] == ["NoRunsToCreate", f"No runs to create for Dag {case.dag_id}"], sidecar
        assert sidecar["field"] == "backfill.from_date"
        return
    if "backfill_id" in airflow:  # a request that sets up the next ones
        assert "backfill_id" in sidecar, sidecar
        return
    assert "error" in sidecar, f"Airflow refused with {airflow['error']}, the sidecar accepted"
    airflow_class, airflow_message = airflow["error"]
    sidecar_class, sidecar_message = sidecar["error"]
    expected_class, expected_code = EQUIVALENT[airflow_class]
    assert sidecar_class == expected_class.__name__
    assert sidecar_message == airflow_message
    field = sidecar["field"]
    assert field is not None and field.startswith("backfill."), f"no request field named: {field!r}"
    assert status_code_for(expected_class(sidecar_message, field=field)) is expected_code


@pytest.mark.parametrize("case", BETTER_CASES, ids=lambda c: c.name)
def test_refuses_what_airflow_wrongly_accepts(parity_run: ParityRun, case: Request) -> None:
    assert "backfill_id" in parity_run.airflow.results[case.name]  # Airflow 3.3.2 accepts it
    sidecar = parity_run.sidecar.results[case.name]
    assert sidecar["error"][0] == "InvalidArgument"
    assert sidecar["field"] == "backfill.max_active_runs"
