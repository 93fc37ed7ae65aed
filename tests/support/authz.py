"""A sidecar with JWT authentication and a TOML policy, its gRPC stub and its REST gateway.

Used by the authorisation tests of ``tests/security`` (issue 10, "Authorise what you act
on"). Two teams: alice owns DAG :data:`DAG_A`; the admin (role ADMIN) owns everything and
creates the backfills of :data:`DAG_B`; carol may read both DAGs but pause and cancel only
:data:`DAG_A`; a stranger holds no right at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import jwt

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from sidecar.auth import AuthConfig
from sidecar.gateway import GatewayConfig, create_app
from sidecar.server import ServerConfig, SidecarServer
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase

DAG_A = "sidecar_e2e_three"
DAG_B = "sidecar_it_interval"

POLICY = f"""
[[rule]]
principals = ["alice"]
dags = ["sidecar_e2e_*"]
actions = ["*"]

[[rule]]
roles = ["ADMIN"]
dags = ["*"]
actions = ["*"]

[[rule]]
principals = ["carol"]
dags = ["{DAG_A}", "{DAG_B}"]
actions = ["read"]

[[rule]]
principals = ["carol"]
dags = ["{DAG_A}"]
actions = ["pause", "cancel"]
"""


def token(subject: str, **claims: object) -> str:
    """A JWT for ``subject`` signed with the shared secret, valid for an hour."""
    now = int(time.time())
    body: dict[str, object] = {"sub": subject, "aud": "apache-airflow", "iat": now, "exp": now + 3600}
    body.update(claims)
    return jwt.encode(body, JWT_SECRET, algorithm="HS512")


def bearer(subject: str, **claims: object) -> tuple[tuple[str, str]]:
    """gRPC metadata carrying a token for ``subject``."""
    return (("authorization", f"Bearer {token(subject, **claims)}"),)


def header(subject: str, **claims: object) -> dict[str, str]:
    """An HTTP ``Authorization`` header for ``subject``."""
    return {"Authorization": f"Bearer {token(subject, **claims)}"}


ALICE = bearer("alice")
ADMIN = bearer("root", role="ADMIN")
CAROL = bearer("carol")
STRANGER = bearer("nobody")


def create_request(dag_id: str, *, request_id: str = "", day: int = 1) -> pb.CreateBackfillRequest:
    """A small backfill of ``dag_id`` (two days from January ``day``, 2025)."""
    backfill = pb.Backfill(dag_id=dag_id, max_active_runs=2)
    backfill.from_date.FromJsonString(f"2025-01-{day:02d}T00:00:00Z")
    backfill.to_date.FromJsonString(f"2025-01-{day + 2:02d}T00:00:00Z")
    return pb.CreateBackfillRequest(backfill=backfill, request_id=request_id)


@dataclass
class Stack:
    """The running server, a stub on it and an HTTP client on a gateway in front of it."""

    server: SidecarServer
    stub: backfill_pb2_grpc.BackfillServiceStub
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def authz_stack(db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[Stack]:
    """Start the sidecar with :data:`POLICY` on ``db``, a channel and the gateway; stop them after."""
    (tmp_path / "policy.toml").write_text(POLICY)
    auth = AuthConfig(jwt_secret=JWT_SECRET, policy_file=tmp_path / "policy.toml")
    server = SidecarServer(
        ServerConfig(database_url=db.asyncpg_url, listen="127.0.0.1:0", tick_interval=3600, auth=auth)
    )
    await server.start()
    app = create_app(GatewayConfig(target=f"127.0.0.1:{server.port}"))
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http,
        ):
            yield Stack(server, backfill_pb2_grpc.BackfillServiceStub(channel), http)
    finally:
        await app.upstream.close()
        await server.stop()
