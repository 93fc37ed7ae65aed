"""A non-default ``task_instance_mutation_hook`` refuses backfills; the refused features are named.

The hook lives in the scheduler's Python environment, so the shim reports it in every
``TickRequest`` and the sidecar refuses creation (FAILED_PRECONDITION naming the feature)
and stops writing windowed runs while a scheduler reports one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from airflow_shim._policies import mutation_hook_name
from sidecar._gen.airflow_sidecar.v1 import scheduler_pb2
from sidecar.api._errors import status_code_for
from sidecar.api._servicer import SchedulerServicer
from sidecar.engine import BackfillEngine, BackfillSpec, DryRun
from sidecar.engine._policies import SchedulerPolicies
from sidecar.errors import UnsupportedFeature
from sidecar.store import connect, prepare
from tests.parity.cases import REFUSED_CASES
from tests.parity.conftest import ParityRun
from tests.parity.harness import Request
from tests.support.postgres import pg_connect

UTC = dt.UTC


def custom_hook(ti: Any) -> None:
    """A cluster policy that would change every task instance."""
    ti.queue = "elsewhere"


def default_like_hook(ti: Any) -> None:
    """Marked as Airflow marks its default no-op policies."""


default_like_hook.is_noop = True  # type: ignore[attr-defined]


def test_shim_names_a_custom_hook_and_not_the_default() -> None:
    assert mutation_hook_name(custom_hook) == f"{__name__}.custom_hook"
    assert mutation_hook_name(default_like_hook) == ""


@pytest.mark.airflow
def test_airflow_default_hook_is_reported_as_default(parity_run: ParityRun) -> None:
    # Asked inside an Airflow 3.3.2 process (the oracle), where the shim runs.
    assert parity_run.airflow.results["mutation_hook"] == {"hook": ""}


def test_reports_expire_and_a_default_report_clears() -> None:
    now = [0.0]
    policies = SchedulerPolicies(ttl=10, clock=lambda: now[0])
    policies.check()
    policies.report("s1", "pkg.hook")
    with pytest.raises(UnsupportedFeature, match=r"task_instance_mutation_hook \(pkg.hook"):
        policies.check()
    policies.report("s1", "")
    policies.check()
    policies.report("s2", "pkg.hook")
    now[0] = 11.0
    policies.check()


@pytest.fixture
async def engine(parity_run: ParityRun) -> AsyncIterator[BackfillEngine]:
    """An engine on the sidecar's parity database (after the parity script ran)."""
    db = connect(parity_run.dbs.sidecar_url)
    await prepare(db)
    try:
        yield BackfillEngine(db)
    finally:
        await db.dispose()


def _backfill_count(parity_run: ParityRun) -> int:
    conn = pg_connect(parity_run.dbs.sidecar_name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM backfill")
            count: int = cur.fetchone()[0]
            return count
    finally:
        conn.close()


@pytest.mark.postgres
async def test_reported_hook_refuses_creation_and_writes_nothing(
    engine: BackfillEngine, parity_run: ParityRun
) -> None:
    servicer = SchedulerServicer(engine)
    spec = BackfillSpec(
        dag_id="parity_chain",
        from_date=dt.datetime(2024, 12, 1, tzinfo=UTC),
        to_date=dt.datetime(2024, 12, 3, tzinfo=UTC),
    )
    before = _backfill_count(parity_run)
    await servicer.Tick(
        scheduler_pb2.TickRequest(scheduler_id="host:1", task_instance_mutation_hook="site.policies.hook"),
        None,  # type: ignore[arg-type]
    )
    with pytest.raises(UnsupportedFeature) as refused:
        await engine.create(spec)
    assert "task_instance_mutation_hook (site.policies.hook" in refused.value.message
    assert status_code_for(refused.value) is grpc.StatusCode.FAILED_PRECONDITION
    assert _backfill_count(parity_run) == before
    assert (await engine.tick()).runs_written == 0

    # The scheduler restarted without the hook: creation is possible again (a dry run here,
    # so that the parity databases stay as the row diff left them).
    await servicer.Tick(scheduler_pb2.TickRequest(scheduler_id="host:1"), None)  # type: ignore[arg-type]
    plan = await engine.create(spec, validate_only=True)
    assert isinstance(plan, DryRun) and len(plan.runs) == 3


#: What each refusal names (the cases of the Airflow under test: tests/parity/versions.py).
REFUSED_FEATURES = {
    "partitioned": "partitioned DAGs on Airflow 3.2",  # 3.2 only (tests/parity/versions.py)
    "deadline_alerts": "deadline alerts",
}


@pytest.mark.postgres
@pytest.mark.airflow
@pytest.mark.parametrize(
    ("case", "feature"),
    [(case, REFUSED_FEATURES[case.name]) for case in REFUSED_CASES],
    ids=lambda v: getattr(v, "name", ""),
)
def test_refused_features_are_named(parity_run: ParityRun, case: Request, feature: str) -> None:
    assert "backfill_id" in parity_run.airflow.results[case.name]  # Airflow writes its rows
    sidecar = parity_run.sidecar.results[case.name]
    assert sidecar["error"][0] == "UnsupportedFeature"
    assert feature in sidecar["error"][1]
    assert status_code_for(UnsupportedFeature(sidecar["error"][1])) is grpc.StatusCode.FAILED_PRECONDITION
