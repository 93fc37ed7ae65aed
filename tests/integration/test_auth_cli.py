"""Security from the command line: ``serve`` refuses to start unlocked, and the CLI authenticates.

``serve`` is checked as an operator meets it: a one-line error and exit code 2 when nothing
is configured, when ``--no-auth`` is asked for on a public address, or when a policy or token
file is malformed; all of it before the database is touched (the URL points nowhere).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.auth import token_digest
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import start_sidecar

NOWHERE = "postgresql+asyncpg://nobody@127.0.0.1:1/none"


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **(env or {})},
        input=stdin,
    )


def refused(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("airflow-sidecar: error: ") and text in lines[0], lines


def test_serve_refuses_to_start_without_authentication() -> None:
    refused(cli("serve", "--database-url", NOWHERE), "no authentication configured")


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "10.1.2.3", "sidecar.example.com"])
def test_no_auth_is_refused_off_loopback(host: str) -> None:
    refused(
        cli("serve", "--database-url", NOWHERE, "--no-auth", "--listen", f"{host}:{free_port()}"),
        "--no-auth is refused on non-loopback address",
    )


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (
            '[[rule]]\nprincipals = ["a"]\ndags = ["*"]\nactions = ["delete"]\n',
            "rule #1: unknown action 'delete'",
        ),
        ('[[rule]]\ndags = ["*"]\nactions = ["read"]\n', "rule #1: names no principals and no roles"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_a_malformed_policy_is_refused_in_one_line(tmp_path: Path, policy: str, text: str) -> None:
    (tmp_path / "policy.toml").write_text(policy)
    result = cli(
        "serve", "--database-url", NOWHERE, "--policy", str(tmp_path / "policy.toml"),
        env={"SIDECAR_JWT_SECRET": JWT_SECRET},
    )  # fmt: skip
    refused(result, text)


def test_a_token_file_with_plain_tokens_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokens.toml").write_text('[[token]]\nsha256 = "hunter2"\nprincipal = "svc"\n')
    refused(
        cli("serve", "--database-url", NOWHERE, "--token-file", str(tmp_path / "tokens.toml")),
        "token #1: sha256 must be 64 hex digits",
    )


@pytest.fixture
def secured_target(clean_db: AirflowDatabase, tmp_path: Path) -> Iterator[str]:
    """A ``serve`` process that accepts JWTs signed with the shared secret (given by env)."""
    process, address = start_sidecar(
        clean_db.asyncpg_url, tmp_path, env={"SIDECAR_JWT_SECRET": JWT_SECRET}, auth_args=()
    )
    try:
        yield address
    finally:
        process.stop()


def test_cli_sends_its_token_from_a_flag_the_environment_or_a_file(
    secured_target: str, tmp_path: Path
) -> None:
    listing = ("backfill", "list", "--target", secured_target, "--output", "json")
    denied = cli(*listing)
    assert denied.returncode == 1
    assert denied.stderr.startswith("airflow-sidecar: UNAUTHENTICATED: missing bearer token"), denied.stderr

    minted = cli("token", "jwt", "--subject", "ops", env={"SIDECAR_JWT_SECRET": JWT_SECRET})
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    (tmp_path / "token").write_text(token + "\n")
    for args, env in (
        (("--token", token), {}),
        ((), {"SIDECAR_TOKEN": token}),
        (("--token-file", str(tmp_path / "token")), {}),
        ((), {"SIDECAR_TOKEN_FILE": str(tmp_path / "token")}),
    ):
        result = cli(*listing, *args, env=env)
        assert (result.returncode, result.stdout.strip()) == (0, "[]"), (args, env, result.stderr)

    tampered = cli(*listing, "--token", token[:-4] + "AAAA")
    assert tampered.returncode == 1 and "UNAUTHENTICATED: invalid token" in tampered.stderr


def test_token_hash_prints_a_token_file_entry_and_completion_prints_a_script() -> None:
    entry = cli("token", "hash", "--principal", "svc", "--role", "scheduler", stdin="s3cret\n")
    assert entry.returncode == 0, entry.stderr
    assert entry.stdout.splitlines() == [
        "[[token]]",
        f'sha256 = "{token_digest("s3cret")}"',
        'principal = "svc"',
        'roles = ["scheduler"]',
    ]
    for shell in ("bash", "zsh"):
        script = cli("completion", shell)
        assert script.returncode == 0 and "airflow-sidecar" in script.stdout
