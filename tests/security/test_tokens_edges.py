"""Token edge cases (issue 10): what a valid signature cannot make acceptable.

The principal becomes the backfill's ``triggering_user_name`` (Airflow: ``String(512)``) and the
``jti`` is looked up in Airflow's ``revoked_token``: a JWT whose ``sub`` is too long or holds
control characters, or whose ``jti`` is malformed, used to reach the database and fail there
(an ``Unexpected`` error with SQL, or an UNAVAILABLE retry loop). It is now refused as
``UNAUTHENTICATED``/``TOKEN_INVALID`` before anything is read or written, on every front door.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import jwt
import psycopg2.extensions
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.auth import TOKEN_INVALID, AuthConfig, AuthenticationError, Authenticator, load_token_file
from sidecar.auth._tokens import MAX_PRINCIPAL_LENGTH
from sidecar.gateway import GatewayConfig, create_app
from sidecar.server import SidecarServer
from tests.integration.conftest import running_server
from tests.security.test_errors_leak import (
    FROM,
    THREE,
    TO,
    assert_clean,
    call,
    count_backfills,
    create_request,
    error_info,
)
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase


def token(subject: str, **claims: object) -> str:
    now = int(time.time())
    body: dict[str, object] = {"sub": subject, "aud": "apache-airflow", "iat": now, "exp": now + 3600}
    body.update(claims)
    return jwt.encode(body, JWT_SECRET, algorithm="HS512")


BAD_TOKENS = {
    "sub over 512": token("u" * (MAX_PRINCIPAL_LENGTH + 1)),
    "sub with a newline": token("alice\n2026-01-01 00:00:00,000 INFO forged"),
    "sub with NUL": token("ali\x00ce"),
    "jti with NUL": token("alice", jti="j\x00ti"),
    "jti too long": token("alice", jti="j" * 300),
}


def test_authenticator_refuses_bad_claims() -> None:
    authenticator = Authenticator(jwt_secret=JWT_SECRET)
    longest = authenticator.authenticate(f"Bearer {token('u' * MAX_PRINCIPAL_LENGTH)}")
    assert len(longest.name) == MAX_PRINCIPAL_LENGTH
    assert authenticator.authenticate(f"Bearer {token('Jörg Müller', jti='abc')}").name == "Jörg Müller"
    for label, bad in BAD_TOKENS.items():
        with pytest.raises(AuthenticationError) as refused:
            authenticator.authenticate(f"Bearer {bad}")
        assert refused.value.reason == TOKEN_INVALID, label
        assert "invalid token" in refused.value.message, label
    with pytest.raises(AuthenticationError, match=f"longer than {MAX_PRINCIPAL_LENGTH}"):
        authenticator.authenticate(f"Bearer {BAD_TOKENS['sub over 512']}")


def test_token_file_refuses_unrecordable_principals(tmp_path: Path) -> None:
    digest = "0" * 64
    for principal, message in (("p" * 513, "longer than 512"), ("svc\\nforged", "non-printable")):
        path = tmp_path / "tokens.toml"
        path.write_text(f'[[token]]\nsha256 = "{digest}"\nprincipal = "{principal}"\n')
        with pytest.raises(ValueError, match=message):
            load_token_file(path)


@pytest.fixture
async def auth_server(clean_db: AirflowDatabase) -> AsyncIterator[SidecarServer]:
    async with running_server(clean_db, auth=AuthConfig(jwt_secret=JWT_SECRET)) as srv:
        yield srv


async def test_bad_claims_refused_on_every_front_door(
    auth_server: SidecarServer, sql: psycopg2.extensions.cursor
) -> None:
    app = create_app(GatewayConfig(target=f"127.0.0.1:{auth_server.port}"))
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel,
            httpx.AsyncClient(transport=transport, base_url="http://gw") as http,
        ):
            for label, bad in BAD_TOKENS.items():
                metadata = (("authorization", f"Bearer {bad}"),)
                stub = channel.unary_unary(
                    "/airflow_sidecar.v1.BackfillService/CreateBackfill",
                    request_serializer=pb.CreateBackfillRequest.SerializeToString,
                    response_deserializer=pb.CreateBackfillResponse.FromString,
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub(create_request(), metadata=metadata, timeout=30)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, (
                    label,
                    refused.value.details(),
                )
                assert error_info(refused.value).reason == TOKEN_INVALID, label
                assert_clean(refused.value.details() or "")

                headers = {"authorization": f"Bearer {bad}"}
                v1 = await http.post(
                    "/v1/backfills", json={"dagId": THREE, "fromDate": FROM, "toDate": TO}, headers=headers
                )
                assert v1.status_code == 401, (label, v1.text)
                v2 = await http.post(
                    "/api/v2/backfills",
                    json={"dag_id": THREE, "from_date": FROM, "to_date": TO},
                    headers=headers,
                )
                assert (v2.status_code, v2.json()) == (403, {"detail": "Invalid JWT token"}), label
                assert_clean(v1.text + v2.text)
            # The longest acceptable name is recorded whole.
            longest = "u" * MAX_PRINCIPAL_LENGTH
            made = await call(channel, "CreateBackfill", create_request(), pb.CreateBackfillResponse)
            assert isinstance(made, grpc.aio.AioRpcError)  # no token at all: refused too
            stub = channel.unary_unary(
                "/airflow_sidecar.v1.BackfillService/CreateBackfill",
                request_serializer=pb.CreateBackfillRequest.SerializeToString,
                response_deserializer=pb.CreateBackfillResponse.FromString,
            )
            created = await stub(
                create_request(), metadata=(("authorization", f"Bearer {token(longest)}"),), timeout=30
            )
            assert created.backfill.triggering_user_name == longest
    finally:
        await app.upstream.close()
    sql.execute("SELECT triggering_user_name FROM backfill")
    assert [row[0] for row in sql.fetchall()] == [longest]
    assert count_backfills(sql) == 1
