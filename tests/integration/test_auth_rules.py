"""The rules behind the auth matrix, without a server: loopback, policy, tokens, client settings.

Pure and fast; they pin down the edges the gRPC matrix (``test_auth.py``) does not walk.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import jwt
import pytest

import sidecar.auth
from sidecar.auth import (
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_MISSING,
    Action,
    AuthConfig,
    AuthenticationError,
    Authenticator,
    AuthInterceptor,
    ClientSecurity,
    Policy,
    Principal,
    check_auth,
    is_loopback,
    load_token_file,
    parse_policy,
    token_digest,
)
from sidecar.auth._interceptor import Denied

SECRET = "rules-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123456789"


def test_public_surface_is_frozen() -> None:
    assert sorted(sidecar.auth.__all__) == [
        "AIRFLOW_AUDIENCE",
        "AUTHORIZATION_METADATA",
        "Access",
        "Action",
        "AuthConfig",
        "AuthInterceptor",
        "AuthenticationError",
        "Authenticator",
        "ClientSecurity",
        "DOMAIN",
        "METHOD_RULES",
        "MethodRule",
        "PERMISSION_DENIED",
        "PageTokens",
        "Policy",
        "Principal",
        "RevocationCheck",
        "SCHEDULER_ROLE",
        "TOKEN_EXPIRED",
        "TOKEN_INVALID",
        "TOKEN_MISSING",
        "Target",
        "TlsConfig",
        "build_interceptor",
        "check_auth",
        "check_jwt_secret",
        "current_access",
        "current_principal",
        "is_loopback",
        "load_policy",
        "load_token_file",
        "open_channel",
        "parse_policy",
        "read_token",
        "server_credentials",
        "token_digest",
    ]
    for name in (
        "TOKEN_MISSING",
        "TOKEN_EXPIRED",
        "TOKEN_INVALID",
        "PERMISSION_DENIED",
        "AUTHORIZATION_METADATA",
    ):
        assert getattr(sidecar.auth, name) in {name, "authorization"}


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.9.9.9:1", True),
        ("localhost:1", True),
        ("[::1]:1", True),
        ("0.0.0.0:1", False),
        ("[::]:1", False),
        (":50051", False),
        ("192.168.1.2:1", False),
        ("sidecar:1", False),
    ],
)
def test_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_check_auth_refuses_contradictions() -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        check_auth(AuthConfig(no_auth=True, jwt_secret=SECRET), "127.0.0.1:1")
    check_auth(AuthConfig(no_auth=True), "[::1]:1")
    check_auth(AuthConfig(jwt_secret=SECRET), "0.0.0.0:1")


def test_policy_globs_roles_and_the_scheduler_role() -> None:
    policy = parse_policy(
        {
            "rule": [
                {"principals": ["alice"], "dags": ["ml_*"], "actions": ["read", "create"]},
                {"roles": ["OP"], "dags": ["*"], "actions": ["*"]},
                {"principals": ["*"], "dags": ["public_?"], "actions": ["read"]},
            ]
        },
        "test",
    )
    alice, op, bob = Principal("alice"), Principal("op", frozenset({"OP"})), Principal("bob")
    assert policy.allows(alice, Action.CREATE, "ml_train")
    assert not policy.allows(alice, Action.CREATE, "ML_train")  # case-sensitive, as DAG ids are
    assert not policy.allows(alice, Action.CANCEL, "ml_train")
    assert policy.allows(op, Action.CANCEL, "anything")
    assert policy.allows(bob, Action.READ, "public_1") and not policy.allows(bob, Action.READ, "public_12")
    assert not policy.grants_any(bob, Action.CREATE)
    for who in (alice, op, bob):
        assert not policy.allows(who, Action.TICK, "")
    assert policy.allows(Principal("shim", frozenset({"scheduler"})), Action.TICK, "")
    everyone = Policy.allow_all()
    assert everyone.allows(bob, Action.CANCEL, "x") and not everyone.allows(bob, Action.TICK, "")


def test_policy_cannot_grant_tick() -> None:
    with pytest.raises(ValueError, match="unknown action 'tick'"):
        parse_policy({"rule": [{"principals": ["a"], "dags": ["*"], "actions": ["tick"]}]}, "test")


def _jwt(**claims: object) -> str:
    now = int(time.time())
    body: dict[str, object] = {"sub": "alice", "aud": "apache-airflow", "exp": now + 60}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS512")


def test_roles_from_airflow_role_claim_and_roles_list() -> None:
    auth = Authenticator(jwt_secret=SECRET)
    assert auth.authenticate(f"Bearer {_jwt(role='ADMIN')}").roles == {"ADMIN"}
    assert auth.authenticate(f"bearer {_jwt(role=None, roles=['a', 'b'])}").roles == {"a", "b"}
    principal = auth.authenticate(f"Bearer {_jwt(jti='abc')}")
    assert (principal.name, principal.roles, principal.jti) == ("alice", frozenset(), "abc")
    for bad, reason in (
        ("", TOKEN_MISSING),
        ("Bearer ", TOKEN_MISSING),
        (f"Bearer {_jwt(role=7)}", TOKEN_INVALID),
        (f"Bearer {_jwt(sub='')}", TOKEN_INVALID),
        (f"Bearer {_jwt(nbf=int(time.time()) + 3600)}", TOKEN_INVALID),
        (f"Bearer {_jwt(exp=int(time.time()) - 60)}", TOKEN_EXPIRED),
    ):
        with pytest.raises(AuthenticationError) as excinfo:
            auth.authenticate(bad)
        assert excinfo.value.reason == reason, bad
    # Without a secret no JWT is accepted, however well signed.
    with pytest.raises(AuthenticationError):
        Authenticator().authenticate(f"Bearer {_jwt()}")


def test_static_tokens_by_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[[token]]\nsha256 = "{token_digest("one")}"\nprincipal = "svc"\nroles = "scheduler"\n'
        f'[[token]]\nsha256 = "{token_digest("two").upper()}"\nprincipal = "ci"\n'
    )
    auth = Authenticator(static_tokens=load_token_file(path))
    assert auth.authenticate("Bearer one") == Principal("svc", frozenset({"scheduler"}))
    assert auth.authenticate("Bearer two") == Principal("ci")
    with pytest.raises(AuthenticationError):
        auth.authenticate(f"Bearer {token_digest('one')}")  # the hash is not the token
    path.write_text('[[token]]\nsha256 = "00"\nprincipal = "x"\nextra = 1\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_token_file(path)


def test_client_security_from_env(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    assert ClientSecurity.from_env({}) == ClientSecurity()
    assert ClientSecurity.from_env({"SIDECAR_TOKEN_FILE": str(tmp_path / "token")}).token == "from-file"
    both = ClientSecurity.from_env({"SIDECAR_TOKEN": "env", "SIDECAR_TOKEN_FILE": str(tmp_path / "token")})
    assert both.token == "env"
    assert ClientSecurity.from_env({"SIDECAR_TLS_CA": "/ca.pem"}).uses_tls
    with pytest.raises(ValueError, match="token file"):
        ClientSecurity.from_env({"SIDECAR_TOKEN_FILE": str(tmp_path / "missing")})


def test_refusals_use_the_same_error_domain_as_the_api() -> None:
    from sidecar.api._errors import DOMAIN

    assert sidecar.auth.DOMAIN == DOMAIN


async def test_an_unanswerable_authorisation_question_fails_closed() -> None:
    # The interceptor reads no backfill (the ledger authorises the row it loads); the one
    # question it asks the database is whether a token was revoked.
    async def revoked_unknown(_: str) -> bool:
        raise OSError("connection refused")

    interceptor = AuthInterceptor(Authenticator(jwt_secret=SECRET), Policy.allow_all(), revoked_unknown)
    with pytest.raises(Denied) as excinfo:
        await interceptor.check(
            "/airflow_sidecar.v1.BackfillService/ListBackfills", f"Bearer {_jwt(jti='x')}", None
        )
    assert excinfo.value.status.code == grpc.StatusCode.UNAVAILABLE
