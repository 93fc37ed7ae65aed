"""The security suite runs on the integration fixtures: a real server, gateway and database."""

from collections.abc import AsyncIterator

import grpc
import pytest

from sidecar.server import SidecarServer
from tests.integration.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    clean_db,
    database,
    engine,
    gateway,
    http,
    server,
    sql,
)


@pytest.fixture
async def channel(server: SidecarServer) -> AsyncIterator[grpc.aio.Channel]:  # noqa: F811  (fixture above)
    """An insecure gRPC channel to the integration ``server``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
