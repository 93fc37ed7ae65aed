"""Fixtures of the resilience tests: the integration fixtures plus an emptied module database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import clean_db, database, engine, sql  # noqa: F401  (re-exported fixtures)
from tests.resilience.helpers import query
from tests.support.fixtures import AirflowDatabase


@pytest.fixture
def module_db(airflow_db: AirflowDatabase) -> Iterator[AirflowDatabase]:
    """The module's database, emptied of runs and backfills first."""
    if query(airflow_db, "SELECT to_regclass('airflow_sidecar.sidecar_backfill')") != [(None,)]:
        query(airflow_db, "DELETE FROM airflow_sidecar.sidecar_backfill")
    for statement in (
        "DELETE FROM task_instance",
        "DELETE FROM backfill_dag_run",
        "DELETE FROM dag_run",
        "DELETE FROM backfill",
    ):
        query(airflow_db, statement)
    yield airflow_db
