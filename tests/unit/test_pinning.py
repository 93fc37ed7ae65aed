"""``run_on_latest_version`` is resolved as Airflow's API and CLI resolve it, per Airflow minor.

3.3 (``airflow/api_fastapi/common/dagbag.py``, ``resolve_run_on_latest_version(...,
fallback=True)``): the request's value, else the DAG's ``rerun_with_latest_version``, else
``[core] rerun_with_latest_version``, else True. 3.2 (``BackfillPostBody.run_on_latest_version:
bool = True``, the CLI's ``store_true`` with default True): the request's value, else True.
Every combination is checked (the family is small enough to enumerate).
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from sidecar.catalog import DagParams, DagTemplate
from sidecar.engine._model import BackfillSpec
from sidecar.engine._pinning import pin_of, resolve_run_on_latest_version
from sidecar.store import LoadedDag
from sidecar.store._versions import AIRFLOW_3_2, AIRFLOW_3_3, AirflowRowContract

TRISTATE = (None, True, False)


def _loaded(dag_flag: bool | None, contract: AirflowRowContract, bundle: str | None = None) -> LoadedDag:
    template = DagTemplate(
        dag_id="d",
        timetable={},
        tasks=(),
        has_depends_on_past=False,
        allowed_run_types=None,
        disable_bundle_versioning=False,
        params=DagParams(),
        ti_count=0,
        rerun_with_latest_version=dag_flag,
    )
    return LoadedDag(
        template=template,
        dag_version_id=uuid.UUID(int=7),
        dag_hash="h",
        bundle_version=bundle,
        allowed_run_types=None,
        is_paused=False,
        airflow=contract,
    )


def _airflow_3_3(requested: bool | None, dag_flag: bool | None, configured: bool | None) -> bool:
    if requested is not None:
        return requested
    if dag_flag is not None:
        return dag_flag
    return True if configured is None else configured


@pytest.mark.parametrize(("requested", "dag_flag", "configured"), list(itertools.product(TRISTATE, repeat=3)))
def test_resolution_follows_each_minor(
    requested: bool | None, dag_flag: bool | None, configured: bool | None
) -> None:
    on_3_3 = resolve_run_on_latest_version(requested, _loaded(dag_flag, AIRFLOW_3_3), configured)
    assert on_3_3 is _airflow_3_3(requested, dag_flag, configured)
    on_3_2 = resolve_run_on_latest_version(requested, _loaded(dag_flag, AIRFLOW_3_2), configured)
    assert on_3_2 is (True if requested is None else requested)


def test_the_pin_is_the_loaded_version_and_its_bundle_version() -> None:
    spec = BackfillSpec(dag_id="d", from_date=None, to_date=None, run_on_latest_version=False)  # type: ignore[arg-type]
    pin = pin_of(spec, _loaded(None, AIRFLOW_3_3, bundle="abc123"), None)
    assert (pin.dag_version_id, pin.bundle_version, pin.run_on_latest_version) == (
        uuid.UUID(int=7),
        "abc123",
        False,
    )
