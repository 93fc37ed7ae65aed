"""The gateway forwards ``Authorization`` and answers auth failures exactly as Airflow 3.3.2 does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import psycopg2.extensions
import pytest

from sidecar.auth import AuthConfig
from sidecar.gateway import GatewayConfig, create_app
from sidecar.server import ServerConfig, SidecarServer
from tests.support.fixtures import AirflowDatabase

SECRET = "gateway-test-secret-of-at-least-64-bytes-for-hs512-0123456789abcdef"
POLICY = """
[[rule]]
principals = ["alice"]
dags = ["sidecar_e2e_*"]
actions = ["read", "create", "pause", "cancel"]
"""
BODY = {
    "dag_id": "sidecar_e2e_three",
    "from_date": "2025-01-01T00:00:00Z",
    "to_date": "2025-01-03T00:00:00Z",
    "max_active_runs": 2,
}


def token(subject: str, *, secret: str = SECRET, expires_in: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": subject, "aud": "apache-airflow", "iat": now, "exp": now + expires_in}
    return jwt.encode(claims, secret, algorithm="HS256")


def auth(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def http(clean_db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "policy.toml").write_text(POLICY)
    srv = SidecarServer(
        ServerConfig(
            database_url=clean_db.asyncpg_url,
            listen="127.0.0.1:0",
            tick_interval=3600,
            auth=AuthConfig(jwt_secret=SECRET, policy_file=tmp_path / "policy.toml"),
        )
    )
    await srv.start()
    app = create_app(GatewayConfig(target=f"127.0.0.1:{srv.port}"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client
    finally:
        await app.upstream.close()
        await srv.stop()


async def test_airflow_routes_give_airflows_auth_answers(
    http: httpx.AsyncClient, sql: psycopg2.extensions.cursor
) -> None:
    cases = [
        ({}, 401, "Not authenticated"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, 401, "Not authenticated"),
        (auth("garbage"), 403, "Invalid JWT token"),
        (
            auth(token("alice", secret="another-secret-of-at-least-64-bytes-for-hs512-0123456789abcdefgh")),
            403,
            "Invalid JWT token",
        ),
        (auth(token("alice", expires_in=-3600)), 401, "Token Expired"),
        (auth(token("alice")), 403, "Forbidden"),  # allowed token, DAG not in alice's policy
    ]
    for headers, status, detail in cases:
        body = {**BODY, "dag_id": "sidecar_it_params"} if status == 403 and detail == "Forbidden" else BODY
        response = await http.post("/api/v2/backfills", json=body, headers=headers)
        assert (response.status_code, response.json()) == (status, {"detail": detail}), headers
    # Airflow authenticates before it validates the body.
    bad_body = await http.post("/api/v2/backfills", json={**BODY, "mode": "eager"})
    assert (bad_body.status_code, bad_body.json()) == (401, {"detail": "Not authenticated"})
    sql.execute("SELECT count(*) FROM backfill")
    assert sql.fetchone() == (0,)

    created = await http.post("/api/v2/backfills", json=BODY, headers=auth(token("alice")))
    assert created.status_code == 200, created.text
    sql.execute("SELECT triggering_user_name FROM backfill")
    assert sql.fetchall() == [("alice",)]
    listed = await http.get(
        "/api/v2/backfills", params={"dag_id": BODY["dag_id"]}, headers=auth(token("alice"))
    )
    assert listed.json()["total_entries"] == 1


async def test_v1_routes_answer_aip193_auth_errors(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v1/backfills")
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert error["status"] == "UNAUTHENTICATED"
    assert [d["reason"] for d in error["details"] if "reason" in d] == ["TOKEN_MISSING"]
    body = {"dagId": "sidecar_it_params", "fromDate": BODY["from_date"], "toDate": BODY["to_date"]}
    denied = await http.post("/v1/backfills", json=body, headers=auth(token("alice")))
    assert (denied.status_code, denied.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
