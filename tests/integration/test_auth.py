"""The auth matrix over gRPC: a real server with a JWT secret, static tokens and a policy, on
the real Airflow 3.3.2 schema. Every refusal is checked to have written nothing.

The Airflow-issued token is minted by Airflow 3.3.2 itself (its Simple auth manager, in a
subprocess with the test's Airflow configuration), so the sidecar is proved to accept tokens
exactly as Airflow's API server issues them when ``[api_auth] jwt_secret`` is shared.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import psycopg2.extensions
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.auth import AuthConfig, token_digest
from sidecar.server import ServerConfig, SidecarServer
from tests.support.airflow import JWT_SECRET, process_environ
from tests.support.fixtures import AirflowDatabase

ALLOWED = "sidecar_e2e_three"  # alice's DAG (policy glob sidecar_e2e_*)
FORBIDDEN = "sidecar_it_interval"  # not alice's
SCHEDULER_TOKEN = "svc-scheduler-0123456789abcdef"
ADMIN_TOKEN = "svc-admin-0123456789abcdef"
OTHER_SECRET = "not-the-shared-secret-0123456789abcdef0123456789abcdef0123456789abcdef"

POLICY = f"""
[[rule]]
principals = ["alice"]
dags = ["sidecar_e2e_*"]
actions = ["read", "create", "pause", "cancel"]

[[rule]]
roles = ["ADMIN"]
dags = ["*"]
actions = ["*"]

[[rule]]
principals = ["viewer"]
dags = ["{ALLOWED}"]
actions = ["read"]
"""

TOKENS = f"""
[[token]]
sha256 = "{token_digest(SCHEDULER_TOKEN)}"
principal = "airflow-scheduler"
roles = ["scheduler"]

[[token]]
sha256 = "{token_digest(ADMIN_TOKEN)}"
principal = "ci"
roles = ["ADMIN"]
"""


def hs(subject: str, *, algorithm: str = "HS256", secret: str = JWT_SECRET, **claims: object) -> str:
    """A script-style JWT: ``sub``, ``aud`` and an hour of validity unless overridden."""
    now = int(time.time())
    body: dict[str, object] = {"sub": subject, "aud": "apache-airflow", "iat": now, "exp": now + 3600}
    body.update(claims)
    return jwt.encode(body, secret, algorithm=algorithm)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


def create_request(dag_id: str) -> pb.CreateBackfillRequest:
    backfill = pb.Backfill(dag_id=dag_id, max_active_runs=2)
    backfill.from_date.FromJsonString("2025-01-01T00:00:00Z")
    backfill.to_date.FromJsonString("2025-01-03T00:00:00Z")
    return pb.CreateBackfillRequest(backfill=backfill)


def counts(sql: psycopg2.extensions.cursor) -> tuple[int, int, int]:
    sql.execute(
        "SELECT (SELECT count(*) FROM backfill), (SELECT count(*) FROM dag_run),"
        " (SELECT count(*) FROM task_instance)"
    )
    row = sql.fetchone()
    assert row is not None
    return row


@pytest.fixture(scope="module")
def airflow_token(airflow_db: AirflowDatabase) -> str:
    """A token issued by Airflow 3.3.2's Simple auth manager for user alice (role USER)."""
    code = (
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager\n"
        "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser\n"
        "print(SimpleAuthManager().generate_jwt(SimpleAuthManagerUser(username='alice', role='USER')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=process_environ(airflow_db.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    return token


@pytest.fixture
async def server(clean_db: AirflowDatabase, tmp_path: Path) -> AsyncIterator[SidecarServer]:
    (tmp_path / "policy.toml").write_text(POLICY)
    (tmp_path / "tokens.toml").write_text(TOKENS)
    auth = AuthConfig(
        jwt_secret=JWT_SECRET, token_file=tmp_path / "tokens.toml", policy_file=tmp_path / "policy.toml"
    )
    srv = SidecarServer(
        ServerConfig(database_url=clean_db.asyncpg_url, listen="127.0.0.1:0", tick_interval=3600, auth=auth)
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def stub(server: SidecarServer) -> AsyncIterator[backfill_pb2_grpc.BackfillServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield backfill_pb2_grpc.BackfillServiceStub(channel)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), "TOKEN_MISSING"),
        ((("authorization", "Basic YWxpY2U6cHc="),), "TOKEN_MISSING"),
        (bearer("not-a-token"), "TOKEN_INVALID"),
        (bearer(hs("alice", secret=OTHER_SECRET)), "TOKEN_INVALID"),
        (bearer(hs("alice", aud="someone-else")), "TOKEN_INVALID"),
        (bearer(hs("alice", algorithm="HS384")), "TOKEN_INVALID"),
        (
            bearer(jwt.encode({"sub": "alice", "aud": "apache-airflow"}, JWT_SECRET, algorithm="HS256")),
            "TOKEN_INVALID",
        ),
        (bearer(hs("alice", exp=int(time.time()) - 3600)), "TOKEN_EXPIRED"),
    ],
    ids=[
        "no-token",
        "not-bearer",
        "garbage",
        "wrong-secret",
        "wrong-audience",
        "wrong-alg",
        "no-exp",
        "expired",
    ],
)
async def test_unauthenticated_calls_are_refused_and_write_nothing(
    stub: backfill_pb2_grpc.BackfillServiceStub,
    sql: psycopg2.extensions.cursor,
    metadata: tuple[tuple[str, str], ...],
    expected: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CreateBackfill(create_request(ALLOWED), metadata=metadata)
    assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(excinfo.value) == expected
    assert counts(sql) == (0, 0, 0)


async def test_airflow_issued_token_creates_on_its_dag_and_is_recorded_as_triggering_user(
    stub: backfill_pb2_grpc.BackfillServiceStub, sql: psycopg2.extensions.cursor, airflow_token: str
) -> None:
    created = (await stub.CreateBackfill(create_request(ALLOWED), metadata=bearer(airflow_token))).backfill
    sql.execute("SELECT dag_id, triggering_user_name FROM backfill")
    assert sql.fetchall() == [(ALLOWED, "alice")]
    sql.execute("SELECT DISTINCT triggering_user_name FROM dag_run")
    assert sql.fetchall() == [("alice",)]
    # HS256 from a script, same secret, same principal: reads and steers the same backfill.
    script = bearer(hs("alice"))
    got = (await stub.GetBackfill(pb.GetBackfillRequest(name=created.name), metadata=script)).backfill
    assert got.id == created.id
    paused = (await stub.PauseBackfill(pb.PauseBackfillRequest(name=created.name), metadata=script)).backfill
    assert paused.is_paused


async def test_wrong_dag_is_denied_and_writes_nothing(
    stub: backfill_pb2_grpc.BackfillServiceStub, sql: psycopg2.extensions.cursor, airflow_token: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CreateBackfill(create_request(FORBIDDEN), metadata=bearer(airflow_token))
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(excinfo.value) == "PERMISSION_DENIED"
    assert FORBIDDEN in (excinfo.value.details() or "")
    assert counts(sql) == (0, 0, 0)


async def test_calls_naming_a_backfill_are_authorised_by_its_dag(
    stub: backfill_pb2_grpc.BackfillServiceStub, sql: psycopg2.extensions.cursor
) -> None:
    admin = bearer(ADMIN_TOKEN)  # static service token, role ADMIN: every DAG
    theirs = (await stub.CreateBackfill(create_request(FORBIDDEN), metadata=admin)).backfill
    mine = (await stub.CreateBackfill(create_request(ALLOWED), metadata=bearer(hs("alice")))).backfill
    before = counts(sql)
    alice = bearer(hs("alice"))
    # A backfill of a DAG alice may not read is, to her, a backfill that does not exist
    # (issue 10: NOT_FOUND, as Airflow answers 404); naming its DAG in a listing stays refused.
    for call in (
        stub.GetBackfill(pb.GetBackfillRequest(name=theirs.name), metadata=alice),
        stub.PauseBackfill(pb.PauseBackfillRequest(name=theirs.name), metadata=alice),
        stub.UnpauseBackfill(pb.UnpauseBackfillRequest(name=theirs.name), metadata=alice),
        stub.CancelBackfill(pb.CancelBackfillRequest(name=theirs.name), metadata=alice),
        stub.ListBackfillRuns(pb.ListBackfillRunsRequest(parent=theirs.name), metadata=alice),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call
        assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason(excinfo.value) == "BACKFILL_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.WatchBackfill(pb.WatchBackfillRequest(name=theirs.name), metadata=alice).read()
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.ListBackfills(pb.ListBackfillsRequest(dag_id=FORBIDDEN), metadata=alice)
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    sql.execute("SELECT id, is_paused, completed_at IS NULL FROM backfill ORDER BY id")
    assert sql.fetchall() == [(theirs.id, False, True), (mine.id, False, True)]
    assert counts(sql) == before

    # Listing without a filter shows only what the caller may read; the admin sees both.
    listed = await stub.ListBackfills(pb.ListBackfillsRequest(), metadata=alice)
    assert [b.id for b in listed.backfills] == [mine.id]
    listed = await stub.ListBackfills(pb.ListBackfillsRequest(), metadata=admin)
    assert sorted(b.id for b in listed.backfills) == sorted([mine.id, theirs.id])
    # A reader may read, not steer; a caller with no rights cannot probe for backfills.
    viewer = bearer(hs("viewer"))
    assert (
        await stub.GetBackfill(pb.GetBackfillRequest(name=mine.name), metadata=viewer)
    ).backfill.id == mine.id
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CancelBackfill(pb.CancelBackfillRequest(name=mine.name), metadata=viewer)
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.GetBackfill(pb.GetBackfillRequest(name="backfills/999999"), metadata=alice)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.GetBackfill(pb.GetBackfillRequest(name="backfills/999999"), metadata=bearer(hs("nobody")))
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_tick_needs_the_scheduler_role(server: SidecarServer, airflow_token: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        scheduler = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        await scheduler.Tick(scheduler_pb2.TickRequest(scheduler_id="t"), metadata=bearer(SCHEDULER_TOKEN))
        await scheduler.Tick(scheduler_pb2.TickRequest(), metadata=bearer(hs("shim", role="scheduler")))
        for token in (airflow_token, ADMIN_TOKEN, hs("alice", roles=["ADMIN"])):
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await scheduler.Tick(scheduler_pb2.TickRequest(), metadata=bearer(token))
            assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert reason(excinfo.value) == "PERMISSION_DENIED"
        # The scheduler's token is for Tick only: it may not create backfills.
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.CreateBackfill(create_request(ALLOWED), metadata=bearer(SCHEDULER_TOKEN))
        assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_is_open_and_reflection_needs_a_token(server: SidecarServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            async for _ in reflection.ServerReflectionInfo(iter([request])):
                pass
        assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
        replies = reflection.ServerReflectionInfo(iter([request]), metadata=bearer(hs("alice")))
        names = [s.name async for r in replies for s in r.list_services_response.service]
        assert "airflow_sidecar.v1.BackfillService" in names


async def test_a_token_airflow_revoked_is_refused(
    stub: backfill_pb2_grpc.BackfillServiceStub, sql: psycopg2.extensions.cursor
) -> None:
    jti = uuid.uuid4().hex
    token = hs("alice", algorithm="HS512", jti=jti)
    await stub.ListBackfills(pb.ListBackfillsRequest(), metadata=bearer(token))
    # What Airflow's logout does (RevokedToken.revoke): the jti goes into revoked_token.
    sql.execute("INSERT INTO revoked_token (jti, exp) VALUES (%s, now() + interval '1 hour')", (jti,))
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CreateBackfill(create_request(ALLOWED), metadata=bearer(token))
    assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(excinfo.value) == "TOKEN_INVALID"
    assert counts(sql) == (0, 0, 0)
