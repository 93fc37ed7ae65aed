"""Fixtures of the resilience tests: the integration fixtures, an emptied module database, replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from sidecar.engine import BackfillEngine, EngineConfig
from sidecar.store import Database, connect
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


@pytest.fixture
async def replicas(
    clean_db: AirflowDatabase,  # noqa: F811  (the fixture imported above)
    database: Database,  # noqa: F811
) -> AsyncIterator[list[BackfillEngine]]:
    """Four engines, each with its own connection pool: four sidecar replicas."""
    dbs = [database] + [connect(clean_db.asyncpg_url) for _ in range(3)]
    yield [BackfillEngine(db, EngineConfig(batch_size=7, lookahead=1)) for db in dbs]
    for db in dbs[1:]:
        await db.dispose()
