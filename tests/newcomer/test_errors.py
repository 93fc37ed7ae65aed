"""Every error a user can cause at start-up or in the CLI: one or two lines, what is wrong and what to do.

Real processes against real parts (PostgreSQL on 127.0.0.1:5432, a real ``serve``); the
messages are snapshots, so a change of wording is a reviewed diff. ``--debug`` brings the
traceback back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.newcomer.snapshots import assert_snapshot, cli, transcript
from tests.support.ports import free_port

WRONG_DATABASES = {
    "wrong_database_name": "postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_airflow_db",
    "wrong_user": "postgresql+asyncpg://no_such_user@127.0.0.1:5432/postgres",
    "wrong_port": "postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres",
    "not_airflow": "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
}


def _short(result: subprocess.CompletedProcess[str], code: int) -> None:
    """Exit ``code``, at most two lines on stderr, no traceback."""
    stderr = result.stderr
    assert result.returncode == code, stderr
    assert 1 <= len(stderr.strip().splitlines()) <= 2, stderr
    assert "Traceback" not in stderr


def _serve(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("serve", "--no-auth", "--listen", f"127.0.0.1:{free_port()}", "--database-url", url, *extra)


@pytest.mark.parametrize("case", sorted(WRONG_DATABASES))
def test_serve_with_a_wrong_database_is_one_line(case: str) -> None:
    result = _serve(WRONG_DATABASES[case].format(port=free_port()))
    _short(result, 2)
    assert len(result.stderr.strip().splitlines()) == 1
    assert_snapshot(f"serve_{case}", transcript(result))


def test_serve_with_a_missing_sqlite_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "airflow.db"
    result = _serve(f"sqlite+aiosqlite:///{path}")
    _short(result, 2)
    assert not path.exists()
    assert_snapshot("serve_missing_sqlite_file", transcript(result))


def test_serve_without_a_database() -> None:
    result = cli("serve", "--no-auth")
    _short(result, 2)
    assert_snapshot("serve_no_database", transcript(result))


def test_debug_shows_the_traceback_anywhere_on_the_line() -> None:
    for argv in (
        ("--debug", "serve", "--no-auth", "--database-url", WRONG_DATABASES["wrong_database_name"]),
        ("serve", "--no-auth", "--database-url", WRONG_DATABASES["wrong_database_name"], "--debug"),
    ):
        result = cli(*argv, "--listen", f"127.0.0.1:{free_port()}")
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert 'database "no_such_airflow_db" does not exist' in result.stderr


def test_cli_without_a_sidecar_names_the_target_and_how_to_start_one() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for args, env in (
        (("backfill", "list", "--target", nowhere, "--timeout", "3"), {}),
        (("backfill", "get", "7", "--timeout", "3"), {"SIDECAR_TARGET": nowhere}),
    ):
        result = cli(*args, env=env)
        _short(result, 1)
        assert nowhere in result.stderr
        assert "airflow-sidecar serve" in result.stderr
    assert_snapshot("cli_no_sidecar", transcript(result))


def test_token_jwt_without_a_secret_says_where_the_secret_is() -> None:
    result = cli("token", "jwt", "--subject", "me")
    _short(result, 2)
    assert "airflow config get-value api_auth jwt_secret" in result.stderr
    assert_snapshot("token_jwt_no_secret", transcript(result))


def test_bad_dates_and_conf_are_one_line() -> None:
    result = cli("backfill", "create", "--dag-id", "d", "--from-date", "yesterday", "--to-date", "2025-01-01")
    _short(result, 2)
    assert_snapshot("cli_bad_date", transcript(result))


def test_cli_without_a_token_says_how_to_get_one(secured_sidecar: str) -> None:
    result = cli("backfill", "list", "--target", secured_sidecar)
    _short(result, 1)
    assert result.stderr.startswith("airflow-sidecar: UNAUTHENTICATED: missing bearer token")
    assert_snapshot("cli_no_token", transcript(result))
