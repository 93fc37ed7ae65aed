"""Fixtures for tests that run the sidecar against a real Airflow 3.3.2 schema on PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg2
import pytest

from sidecar.auth import AuthConfig
from sidecar.engine import BackfillEngine, EngineConfig
from sidecar.gateway import Gateway, GatewayConfig, create_app
from sidecar.server import ServerConfig, SidecarServer
from sidecar.store import Database, connect, prepare
from tests.support.fixtures import AirflowDatabase

# Rows a test may leave behind, children first.
_CLEAN = (
    "DELETE FROM task_instance_history",
    "DELETE FROM task_instance",
    "DELETE FROM backfill_dag_run",
    "DELETE FROM dag_run",
    "DELETE FROM backfill",
)


@pytest.fixture
def clean_db(airflow_db: AirflowDatabase) -> Iterator[AirflowDatabase]:
    """The module's database with no runs, backfills or sidecar state left by an earlier test."""
    conn = psycopg2.connect(airflow_db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn, conn.cursor() as cur:
            for statement in _CLEAN:
                cur.execute(statement)
            cur.execute("SELECT to_regclass('airflow_sidecar.sidecar_backfill')")
            if cur.fetchone()[0] is not None:
                cur.execute("DELETE FROM airflow_sidecar.sidecar_backfill")
            cur.execute("SELECT to_regclass('airflow_sidecar.sidecar_task_selection')")
            if cur.fetchone()[0] is not None:
                cur.execute("DELETE FROM airflow_sidecar.sidecar_task_selection")
            cur.execute("SELECT to_regclass('airflow_sidecar.sidecar_event')")
            if cur.fetchone()[0] is not None:
                cur.execute("DELETE FROM airflow_sidecar.sidecar_event")
                cur.execute("DELETE FROM airflow_sidecar.sidecar_notify")
        yield airflow_db
    finally:
        conn.close()


@pytest.fixture
def sql(clean_db: AirflowDatabase) -> Iterator[psycopg2.extensions.cursor]:
    """A psycopg2 cursor (autocommit) on the test database, to arrange and check rows."""
    conn = psycopg2.connect(clean_db.psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@pytest.fixture
async def database(clean_db: AirflowDatabase) -> AsyncIterator[Database]:
    """The sidecar's database handle, schema checked and migrated."""
    db = connect(clean_db.asyncpg_url)
    await prepare(db)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def engine(database: Database) -> BackfillEngine:
    """An engine with small batches, so that tests cross batch boundaries."""
    return BackfillEngine(database, EngineConfig(batch_size=3, lookahead=1))


@contextlib.asynccontextmanager
async def running_server(
    db: AirflowDatabase, *, notifier: bool = True, **config: Any
) -> AsyncIterator[SidecarServer]:
    """A started in-process server on ``db`` (loopback, any free port), stopped afterwards.

    Defaults: no authentication (tests about auth pass ``auth=``) and no timer ticks, so
    that only what a test does writes rows; ``config`` overrides any ServerConfig field.
    ``notifier=False``: without the event recorder and webhook sender's pass each second, for
    property tests (hypothesis draws in another thread: nothing else in the process may run
    beside them); webhook and Watch tests keep it.
    """
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "tick_interval": 3600,
        "auth": AuthConfig(no_auth=True),
    }
    settings.update(config)
    srv = SidecarServer(ServerConfig(database_url=db.asyncpg_url, **settings), notifier=notifier)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def server(clean_db: AirflowDatabase) -> AsyncIterator[SidecarServer]:
    """A running server without authentication on the module's database."""
    async with running_server(clean_db) as srv:
        yield srv


@pytest.fixture
async def gateway(server: SidecarServer) -> AsyncIterator[Gateway]:
    """The REST gateway in-process, calling the running ``server``."""
    app = create_app(GatewayConfig(target=f"127.0.0.1:{server.port}", max_body_bytes=64 * 1024))
    try:
        yield app
    finally:
        await app.upstream.close()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the in-process gateway (httpx.ASGITransport)."""
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
