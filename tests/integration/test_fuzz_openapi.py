"""A bounded schemathesis run against the gateway's served OpenAPI document: no 5xx, no crash.

In-process: schemathesis drives the ASGI app itself (``schemathesis.openapi.from_asgi``), and
the app calls a real gRPC server on the real Airflow schema. Both positive (schema-valid) and
negative (schema-violating) cases are generated for every operation, a fixed number each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg2.extensions
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from sidecar.gateway import OPENAPI_PATH, Gateway
from sidecar.server import SidecarServer
from tests.integration.conftest import running_server
from tests.support.fixtures import AirflowDatabase

EXAMPLES_PER_OPERATION = 30


def run_schemathesis(app: Gateway) -> list[str]:
    """Fuzz every operation; return the labels of the operations exercised."""
    schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, app)
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        check()
        exercised.append(operation.label)
    return exercised


@pytest.fixture
async def server(clean_db: AirflowDatabase) -> AsyncIterator[SidecarServer]:
    """The integration server without its notifier loop: hypothesis draws beside it, in a thread."""
    async with running_server(clean_db, notifier=False) as srv:
        yield srv


async def test_schemathesis_finds_no_server_error(gateway: Gateway, sql: psycopg2.extensions.cursor) -> None:
    # Sync schemathesis runs in a thread so that the gRPC server keeps this event loop.
    exercised = await asyncio.to_thread(run_schemathesis, gateway)
    assert len(exercised) == 15
    sql.execute("SELECT count(*) FROM dag_run")
    assert sql.fetchone() == (0,)
