"""``airflow-sidecar doctor`` on each misconfiguration of issue 15, against real parts.

A real sidecar (``serve`` with JWT authentication) on a real Airflow 3.3.2 schema in
PostgreSQL; each test breaks one thing (database name, user, port, SQLite file, no sidecar,
a bad token, a token without the role ``scheduler``) and snapshots what the user reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli._tokens import mint_jwt
from tests.newcomer.snapshots import assert_snapshot, cli, transcript
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port


def _token(*roles: str) -> str:
    return mint_jwt(
        JWT_SECRET, "doctor-test", list(roles), valid_for=600, algorithm="HS512", audience="apache-airflow"
    )


@pytest.fixture
def scheduler_env(airflow_db: AirflowDatabase, secured_sidecar: str) -> dict[str, str]:
    """The scheduler's environment when everything is right."""
    return {
        "SIDECAR_DATABASE_URL": airflow_db.asyncpg_url,
        "SIDECAR_TARGET": secured_sidecar,
        "SIDECAR_TOKEN": _token("scheduler"),
    }


def _with_database(env: dict[str, str], url: str) -> dict[str, str]:
    return {**env, "SIDECAR_DATABASE_URL": url}


def _lines(text: str, status: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(status)]


def test_everything_right_is_ok_and_exit_zero(scheduler_env: dict[str, str]) -> None:
    result = cli("doctor", "--as-scheduler", env=scheduler_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _lines(result.stdout, "FAIL") == []
    assert len(_lines(result.stdout, "ok")) == 7
    assert_snapshot("doctor_ok", transcript(result))


def test_postgres_url_from_airflow_config_works_as_it_is(
    scheduler_env: dict[str, str], airflow_db: AirflowDatabase
) -> None:
    """Airflow's own sql_alchemy_conn (psycopg2) is accepted; the user need not rewrite it."""
    result = cli("doctor", "--as-scheduler", env=_with_database(scheduler_env, airflow_db.psycopg2_url))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("case", "url"),
    [
        ("wrong_database_name", "postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_airflow_db"),
        ("wrong_user", "postgresql+asyncpg://no_such_user@127.0.0.1:5432/postgres"),
        ("wrong_port", "postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"),
        ("not_airflow", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"),
    ],
)
def test_database_misconfigurations(scheduler_env: dict[str, str], case: str, url: str) -> None:
    result = cli("doctor", "--as-scheduler", env=_with_database(scheduler_env, url.format(port=free_port())))
    assert result.returncode == 1
    fails = _lines(result.stdout, "FAIL")
    assert len(fails) == 1, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith("first thing to fix: ")
    assert_snapshot(f"doctor_{case}", transcript(result))


def test_missing_sqlite_file_is_named_and_not_created(scheduler_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "airflow.db"
    result = cli("doctor", env=_with_database(scheduler_env, f"sqlite+aiosqlite:///{path}"))
    assert result.returncode == 1
    assert not path.exists(), "doctor must not create the file"
    assert_snapshot("doctor_missing_sqlite_file", transcript(result))


def test_no_sidecar_running(scheduler_env: dict[str, str]) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    env = {**scheduler_env, "SIDECAR_TARGET": nowhere}
    result = cli("doctor", "--as-scheduler", "--timeout", "3", env=env)
    assert result.returncode == 1
    assert _lines(result.stdout, "FAIL") == [
        f"FAIL  sidecar   nothing answers at {nowhere}; start one with `airflow-sidecar serve "
        "--database-url URL` or point --target (SIDECAR_TARGET) at a running one"
    ]
    assert_snapshot("doctor_no_sidecar", transcript(result))


def test_bad_token(scheduler_env: dict[str, str]) -> None:
    good = scheduler_env["SIDECAR_TOKEN"]
    result = cli("doctor", "--as-scheduler", env={**scheduler_env, "SIDECAR_TOKEN": good[:-4] + "AAAA"})
    assert result.returncode == 1
    assert _lines(result.stdout, "FAIL")[0].startswith("FAIL  token     refused: invalid token")
    assert_snapshot("doctor_bad_token", transcript(result))


def test_no_token(scheduler_env: dict[str, str]) -> None:
    env = {k: v for k, v in scheduler_env.items() if k != "SIDECAR_TOKEN"}
    result = cli("doctor", "--as-scheduler", env=env)
    assert result.returncode == 1
    assert_snapshot("doctor_no_token", transcript(result))


def test_token_without_scheduler_role(scheduler_env: dict[str, str]) -> None:
    result = cli("doctor", "--as-scheduler", env={**scheduler_env, "SIDECAR_TOKEN": _token("viewer")})
    assert result.returncode == 1
    assert [line.split()[1] for line in _lines(result.stdout, "FAIL")] == ["role"]
    assert_snapshot("doctor_token_without_scheduler_role", transcript(result))
    # Without --as-scheduler the same token is fine for the CLI.
    assert cli("doctor", env={**scheduler_env, "SIDECAR_TOKEN": _token("viewer")}).returncode == 0


def test_shim_environment_differs_from_what_was_checked(
    scheduler_env: dict[str, str], secured_sidecar: str
) -> None:
    """A --target flag that the scheduler's SIDECAR_TARGET does not match is the thing to fix."""
    env = {k: v for k, v in scheduler_env.items() if k != "SIDECAR_TARGET"}
    result = cli("doctor", "--as-scheduler", "--target", secured_sidecar, env=env)
    assert result.returncode == 1
    assert [line.split()[1] for line in _lines(result.stdout, "FAIL")] == ["shim"]
    assert "export SIDECAR_TARGET=" in result.stderr


def test_airflows_generated_secret_is_the_first_thing_to_fix(scheduler_env: dict[str, str]) -> None:
    """Airflow 3.3 writes a 24-character ``jwt_secret`` into a new airflow.cfg; ``serve`` refuses it.

    Following the README with it, ``serve`` exits in the background: doctor names the secret
    before the sidecar that does not answer.
    """
    nowhere = f"127.0.0.1:{free_port()}"
    env = {**scheduler_env, "SIDECAR_TARGET": nowhere, "SIDECAR_JWT_SECRET": "lYPNaBSS8gKNYbxXvIPaiQ=="}
    result = cli("doctor", "--as-scheduler", "--timeout", "3", env=env)
    assert result.returncode == 1
    assert [line.split()[1] for line in _lines(result.stdout, "FAIL")] == ["secret", "sidecar"]
    assert result.stderr.startswith("first thing to fix: secret: serve refuses SIDECAR_JWT_SECRET: ")
    assert "openssl rand -hex 32" in result.stderr
    ok = cli("doctor", "--as-scheduler", env={**scheduler_env, "SIDECAR_JWT_SECRET": JWT_SECRET})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    secret" in ok.stdout
