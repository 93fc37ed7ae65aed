"""Fixtures of the newcomer tests: a real ``serve`` that requires Airflow's JWTs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase
from tests.support.processes import start_sidecar


@pytest.fixture(scope="module")
def secured_sidecar(airflow_db: AirflowDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The target of a ``serve`` process on the module's database that accepts JWTs signed with the shared secret."""
    process, target = start_sidecar(
        airflow_db.asyncpg_url,
        tmp_path_factory.mktemp("sidecar"),
        env={"SIDECAR_JWT_SECRET": JWT_SECRET},
        auth_args=(),
    )
    try:
        yield target
    finally:
        process.stop()
