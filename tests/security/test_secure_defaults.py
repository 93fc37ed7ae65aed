"""Secure defaults (issue 10): what the released commands refuse to do unless told otherwise.

Each test runs the real ``airflow-sidecar`` processes on real ports, as an operator would:

* a JWT secret shorter than HS512's key size (RFC 7518 section 3.2) is refused in one line,
  unless ``--allow-weak-jwt-secret`` (or its variable) says otherwise; ``token jwt`` checks the
  size of the algorithm it signs with;
* a second ``serve`` on a port another sidecar holds exits 2 in one line, instead of sharing
  the port (gRPC's default ``SO_REUSEPORT``) and taking half the calls;
* a gateway listening off loopback answers 503 instead of forwarding to a sidecar that
  serves without authentication, and forwards to one that requires it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2_grpc
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import AirflowProcess, start_sidecar
from tests.support.waiting import wait_until

#: A database URL that cannot be reached: the checks under test run before any connection.
NOWHERE = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
#: Exactly HS512's key size, and one byte short of it.
SECRET_64 = "k" * 64
SECRET_63 = "k" * 63


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit code 2)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("airflow-sidecar: error: "), lines
    return lines[0]


# --- JWT secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["x", "short-but-not-empty", SECRET_63])
def test_serve_refuses_a_jwt_secret_shorter_than_hs512s_key(secret: str) -> None:
    line = one_line_error(cli("serve", "--database-url", NOWHERE, "--jwt-secret", secret))
    size = "1 byte" if secret == "x" else f"{len(secret)} bytes"
    assert f"the JWT secret is {size}; HS512 needs at least 64" in line
    assert "openssl rand -hex 32" in line and "--allow-weak-jwt-secret" in line
    by_env = one_line_error(cli("serve", "--database-url", NOWHERE, env={"SIDECAR_JWT_SECRET": secret}))
    assert by_env == line


def test_a_weak_secret_passes_the_check_only_when_allowed() -> None:
    for args, env in (
        (("--jwt-secret", "x", "--allow-weak-jwt-secret"), {}),
        (("--jwt-secret", "x"), {"SIDECAR_ALLOW_WEAK_JWT_SECRET": "1"}),
        (("--jwt-secret", SECRET_64), {}),  # long enough: no flag needed
    ):
        # Past the secret check, serve goes on to the database, which is nowhere.
        result = cli("serve", "--database-url", NOWHERE, *args, env=env)
        assert result.returncode != 0
        assert "JWT secret" not in result.stderr, (args, env, result.stderr)


def test_token_jwt_checks_the_key_size_of_its_algorithm() -> None:
    mint = ("token", "jwt", "--subject", "ops")
    line = one_line_error(cli(*mint, "--jwt-secret", "s" * 31, "--algorithm", "HS256"))
    assert "the JWT secret is 31 bytes; HS256 needs at least 32" in line
    assert cli(*mint, "--jwt-secret", "s" * 32, "--algorithm", "HS256").returncode == 0
    assert "HS512 needs at least 64" in one_line_error(cli(*mint, "--jwt-secret", SECRET_63))
    assert cli(*mint, "--jwt-secret", SECRET_64).returncode == 0
    weak = cli(*mint, "--jwt-secret", "x", "--allow-weak-jwt-secret")
    assert weak.returncode == 0 and weak.stdout.count(".") == 2


def test_the_test_and_demo_secrets_are_strong() -> None:
    assert len(JWT_SECRET.encode()) >= 64
    demo = (Path(__file__).resolve().parents[2] / "scripts" / "demo.sh").read_text()
    assert "secrets.token_hex(32)" in demo  # 64 hex characters, plus a prefix


# --- one port, one server -------------------------------------------------------------------


@pytest.fixture
def sidecar(airflow_db: AirflowDatabase, tmp_path: Path) -> Iterator[str]:
    """A running ``serve --no-auth`` on a loopback port; yields its target."""
    process, target = start_sidecar(airflow_db.asyncpg_url, tmp_path)
    try:
        yield target
    finally:
        process.stop()


def test_a_second_serve_on_a_bound_port_exits_2_and_the_first_keeps_it(
    airflow_db: AirflowDatabase, sidecar: str
) -> None:
    line = one_line_error(
        cli("serve", "--database-url", airflow_db.asyncpg_url, "--listen", sidecar, "--no-auth")
    )
    assert f"cannot listen on {sidecar}: the address is in use" in line
    with grpc.insecure_channel(sidecar) as channel:  # the first server still answers every call
        stub = backfill_pb2_grpc.BackfillServiceStub(channel)
        for _ in range(10):
            stub.ListBackfills(pb.ListBackfillsRequest(page_size=1), timeout=10)


def test_serve_refuses_an_ops_port_already_bound(airflow_db: AirflowDatabase) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ops = f"127.0.0.1:{taken.getsockname()[1]}"
        result = cli(
            "serve", "--database-url", airflow_db.asyncpg_url, "--no-auth",
            "--listen", f"127.0.0.1:{free_port()}", "--ops-listen", ops,
        )  # fmt: skip
    assert f"cannot listen on --ops-listen {ops}" in one_line_error(result)


# --- the gateway never exposes an unauthenticated sidecar -----------------------------------


def start_gateway(tmp_path: Path, listen_host: str, target: str) -> tuple[AirflowProcess, str]:
    """``airflow-sidecar gateway`` on a free port of ``listen_host``; returns it and its loopback URL."""
    port = free_port()
    process = AirflowProcess(
        f"gateway-{listen_host}",
        [sys.executable, "-m", "sidecar", "gateway", "--listen", f"{listen_host}:{port}", "--target", target],
        {},
        tmp_path / f"gateway-{listen_host}-{port}.log",
    ).start()

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        process.wait_ready(listening, 60)
    except BaseException:
        process.stop()
        raise
    return process, f"http://127.0.0.1:{port}"


def get(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{url}/v1/backfills", headers=headers, timeout=30)


def test_a_public_gateway_refuses_to_forward_to_an_unauthenticated_sidecar(
    sidecar: str, tmp_path: Path
) -> None:
    exposed, url = start_gateway(tmp_path, "0.0.0.0", sidecar)
    try:
        for _ in range(2):  # the verdict holds for later requests too
            response = get(url)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert "does not require authentication" in error["message"]
            assert error["details"][0]["reason"] == "SIDECAR_UNAUTHENTICATED"
    finally:
        exposed.stop()
    assert "answers calls without a token" in exposed.log_tail()

    local, url = start_gateway(tmp_path, "127.0.0.1", sidecar)  # both on loopback: allowed
    try:
        response = get(url)
        assert response.status_code == 200, response.text
    finally:
        local.stop()


def test_a_public_gateway_forwards_to_a_sidecar_that_requires_authentication(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    process, target = start_sidecar(
        airflow_db.asyncpg_url, tmp_path, env={"SIDECAR_JWT_SECRET": JWT_SECRET}, auth_args=()
    )
    try:
        gateway, url = start_gateway(tmp_path, "0.0.0.0", target)
        try:
            assert get(url).status_code == 401  # forwarded: the sidecar itself asks for a token
            minted = cli("token", "jwt", "--subject", "ops", env={"SIDECAR_JWT_SECRET": JWT_SECRET})
            assert minted.returncode == 0, minted.stderr
            response = get(url, minted.stdout.strip())
            assert response.status_code == 200, response.text
        finally:
            gateway.stop()
    finally:
        process.stop()


def test_an_exposed_gateway_answers_503_while_the_sidecar_is_down(tmp_path: Path) -> None:
    gateway, url = start_gateway(tmp_path, "0.0.0.0", f"127.0.0.1:{free_port()}")
    try:
        response = wait_until(lambda: get(url), 30)
        assert response.status_code == 503 and "not reachable" in response.json()["error"]["message"]
    finally:
        gateway.stop()
