"""``airflow-sidecar doctor`` on each misconfiguration of issue 15, against real parts.

A real sidecar (``serve`` with JWT authentication) on a real Airflow 3.3.2 schema in
PostgreSQL; each test breaks one thing (database name, user, port, SQLite file, no sidecar,
a bad token, a token without the role ``scheduler``) and snapshots what the user reads.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg2
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from sidecar.cli._tls import tls_problem
from sidecar.cli._tokens import mint_jwt
from sidecar.config import ClientSecurity
from tests.integration.test_auth_tls import Pki, _issue, pki  # noqa: F401  (the certificates fixture)
from tests.newcomer.snapshots import assert_snapshot, cli, normalise, transcript
from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase
from tests.support.ports import free_port
from tests.support.processes import start_sidecar


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


# --- --wait: retry what may come up, fail at once on a setting --------------------------------


def _doctor_waiting(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``doctor --wait`` in the background, with no ``SIDECAR_*`` variable inherited, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", "doctor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "COLUMNS": "100", **env},
    )


def _doctor_waits_until(
    ready: Callable[[], Callable[[], None]], *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``doctor --wait 90`` started on a set-up not ready; ``ready()`` readies it while doctor waits.

    ``ready`` returns what undoes it once doctor has ended; the result is what doctor said.
    """
    doctor = _doctor_waiting(*args, "--timeout", "3", "--wait", "90", env=env)
    try:
        time.sleep(3)  # doctor finds the set-up not ready, and tries again
        assert doctor.poll() is None, "doctor gave up on what was not ready yet"
        undo = ready()
        try:
            out, err = doctor.communicate(timeout=60)
        finally:
            undo()
    finally:
        if doctor.poll() is None:
            doctor.kill()
            doctor.communicate()
    return subprocess.CompletedProcess(doctor.args, doctor.returncode, out, err)


def _sidecar_at(
    target: str, db: AirflowDatabase, log_dir: Path, **kw: Any
) -> Callable[[], Callable[[], None]]:
    """What starts a sidecar listening at ``target`` (``start_sidecar``'s ``kw``) and returns its stop."""

    def start() -> Callable[[], None]:
        sidecar, _ = start_sidecar(db.asyncpg_url, log_dir, port=int(target.rpartition(":")[2]), **kw)
        return sidecar.stop

    return start


@pytest.mark.parametrize(
    ("case", "first"),
    [("short_secret", "secret"), ("wrong_database_name", "database"), ("bad_token", "token")],
)
def test_wait_fails_at_once_on_what_waiting_cannot_fix(
    scheduler_env: dict[str, str], case: str, first: str
) -> None:
    """A setting fails the same way on every try: ``--wait 60`` must not spend its minute on it."""
    env = dict(scheduler_env)
    if case == "short_secret":  # beside a sidecar not listening (which waiting could fix)
        env.update(SIDECAR_JWT_SECRET="lYPNaBSS8gKNYbxXvIPaiQ==", SIDECAR_TARGET=f"127.0.0.1:{free_port()}")
    elif case == "wrong_database_name":
        env["SIDECAR_DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_airflow_db"
    else:
        env["SIDECAR_TOKEN"] = env["SIDECAR_TOKEN"][:-4] + "AAAA"
    started = time.monotonic()
    result = cli("doctor", "--as-scheduler", "--timeout", "3", "--wait", "60", env=env, timeout=90)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 20, f"waited {took:.0f} s on a setting"
    assert result.stderr.startswith(f"not waiting: waiting cannot fix the {first} check\n"), result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"first thing to fix: {first}: ")


def test_wait_retries_until_the_sidecar_listens(airflow_db: AirflowDatabase, tmp_path: Path) -> None:
    """The README's step 3: doctor started before ``serve`` answers passes once it does."""
    target = f"127.0.0.1:{free_port()}"
    env = {
        "SIDECAR_DATABASE_URL": airflow_db.asyncpg_url,
        "SIDECAR_TARGET": target,
        "SIDECAR_TOKEN": _token(),
    }
    sidecar = _sidecar_at(target, airflow_db, tmp_path, env={"SIDECAR_JWT_SECRET": JWT_SECRET}, auth_args=())
    result = _doctor_waits_until(sidecar, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok    sidecar   serving at {target}" in result.stdout and "not waiting" not in result.stderr


def test_wait_as_scheduler_retries_a_sidecar_not_up_without_a_token(
    airflow_db: AirflowDatabase, tmp_path: Path
) -> None:
    """With no token anywhere, whether one is needed is only known once the sidecar answers."""
    target = f"127.0.0.1:{free_port()}"
    env = {"SIDECAR_DATABASE_URL": airflow_db.asyncpg_url, "SIDECAR_TARGET": target}
    result = _doctor_waits_until(_sidecar_at(target, airflow_db, tmp_path), "--as-scheduler", env=env)
    assert "not waiting" not in result.stderr, result.stdout + result.stderr
    assert f"ok    sidecar   serving at {target}" in result.stdout


def test_wait_retries_a_database_not_up_until_the_time_is_up(scheduler_env: dict[str, str]) -> None:
    """Nothing listening at the database's port yet is worth waiting for, up to ``--wait``."""
    env = _with_database(scheduler_env, f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres")
    started = time.monotonic()
    result = cli("doctor", "--wait", "4", env=env)
    assert result.returncode == 1 and time.monotonic() - started >= 4
    assert "not waiting" not in result.stderr
    assert result.stderr.startswith("first thing to fix: database: nothing accepts database connections")


def test_wait_retries_a_database_whose_migration_has_not_made_alembic_version_yet(
    scheduler_env: dict[str, str], airflow_dags_template: tuple[str, tuple[str, ...]]
) -> None:
    """Airflow's schema made, its revision not stamped yet: ``airflow db migrate`` still runs."""
    from tests.support.postgres import drop_database, fresh_airflow_database

    name = f"sidecar_t_migrating_{os.getpid()}"
    asyncpg_url, psycopg2_url = fresh_airflow_database(name, template=airflow_dags_template[0])
    conn = psycopg2.connect(psycopg2_url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER TABLE alembic_version RENAME TO alembic_version_later")

        def migrated() -> Callable[[], None]:
            with conn.cursor() as cur:
                cur.execute("ALTER TABLE alembic_version_later RENAME TO alembic_version")
            return lambda: None

        result = _doctor_waits_until(migrated, env=_with_database(scheduler_env, asyncpg_url))
    finally:
        conn.close()
        drop_database(name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not waiting" not in result.stderr and "ok    schema    Airflow 3.3" in result.stdout


@pytest.fixture(scope="module")
def tls_servers(pki: Pki) -> Iterator[dict[str, str]]:  # noqa: F811
    """Two gRPC servers answering health checks over TLS only: ``tls``, and ``mtls`` (client certificates)."""
    key_pair = [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())]
    credentials = {
        "tls": grpc.ssl_server_credentials(key_pair),
        "mtls": grpc.ssl_server_credentials(key_pair, pki.ca.read_bytes(), require_client_auth=True),
    }
    servers, targets = [], {}
    for kind, creds in credentials.items():
        server = grpc.server(ThreadPoolExecutor(2))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        targets[kind] = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', creds)}"
        server.start()
        servers.append(server)
    yield targets
    for server in servers:
        server.stop(None)


@pytest.fixture(scope="module")
def alerting_mtls_server(pki: Pki) -> Iterator[str]:  # noqa: F811
    """A mutual-TLS server (OpenSSL) that refuses a client's certificate, or the lack of one, with an alert.

    gRPC's own server hangs up without one; a proxy (OpenSSL, BoringSSL) says why.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    listening = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listening.accept()
            except OSError:  # closed: the module's tests are done
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:  # the refused handshake (ssl.SSLError is an OSError)
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listening.getsockname()[1]}"
    listening.close()
    thread.join(10)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("client_tls_server_plaintext", "does not speak TLS, but this client is set to use TLS"),
        ("client_plaintext_server_tls", "speaks TLS, but this client is set to plaintext"),
        ("certificate_not_verified", "TLS certificate of 127.0.0.1:PORT does not verify against"),
        ("client_certificate_wanted", "wants a TLS client certificate (mutual TLS): pass --tls-cert"),
        ("client_certificate_untrusted", "refused this client's TLS certificate"),
    ],
)
def test_wait_fails_at_once_on_a_tls_mismatch(
    scheduler_env: dict[str, str],
    secured_sidecar: str,
    tls_servers: dict[str, str],
    alerting_mtls_server: str,
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    case: str,
    says: str,
) -> None:
    """gRPC says UNAVAILABLE, as for a sidecar not up yet; but it is a setting, and doctor names TLS."""
    env = dict(scheduler_env)
    if case == "client_tls_server_plaintext":  # the real sidecar, serving plaintext
        env.update(SIDECAR_TARGET=secured_sidecar, SIDECAR_TLS_CA=str(pki.ca))
    elif case == "client_plaintext_server_tls":
        env["SIDECAR_TARGET"] = tls_servers["tls"]
    elif case == "certificate_not_verified":  # the system's roots do not know the test CA
        env.update(SIDECAR_TARGET=tls_servers["tls"], SIDECAR_TLS="1")
    elif case == "client_certificate_wanted":
        env.update(SIDECAR_TARGET=alerting_mtls_server, SIDECAR_TLS_CA=str(pki.ca))
    else:  # a client certificate from a CA the server does not trust
        _issue(tmp_path, "stranger", "stranger", _issue(tmp_path, "other-ca", "other-ca", None, None), None)
        env.update(
            SIDECAR_TARGET=alerting_mtls_server,
            SIDECAR_TLS_CA=str(pki.ca),
            SIDECAR_TLS_CLIENT_CERT=str(tmp_path / "stranger.pem"),
            SIDECAR_TLS_CLIENT_KEY=str(tmp_path / "stranger.key"),
        )
    result = cli("doctor", "--timeout", "3", "--wait", "60", env=env, timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    # (gRPC's own library may log the failed handshake on stderr first.)
    assert "not waiting: waiting cannot fix the sidecar check" in result.stderr.splitlines(), result.stderr
    fix = result.stderr.splitlines()[-1]
    assert fix.startswith("first thing to fix: sidecar: ") and says in normalise(fix), fix


def test_wait_fails_at_once_on_another_applications_database(scheduler_env: dict[str, str]) -> None:
    """No alembic_version, but tables that are not Airflow's: no migration will make it Airflow's."""
    from tests.support.postgres import asyncpg_url, drop_database, pg_connect

    name = f"sidecar_t_other_app_{os.getpid()}"
    admin = pg_connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        other = pg_connect(name)
        with other, other.cursor() as cur:
            cur.execute("CREATE TABLE invoices (id integer PRIMARY KEY)")
        other.close()
        result = cli("doctor", "--wait", "60", env=_with_database(scheduler_env, asyncpg_url(name)))
    finally:
        admin.close()
        drop_database(name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not waiting: waiting cannot fix the schema check" in result.stderr.splitlines(), result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "first thing to fix: schema: the database holds no Airflow metadata schema but other tables (invoices)"
    )


def test_wait_waits_for_a_server_that_hangs_up_after_the_tls_handshake(
    scheduler_env: dict[str, str],
    tls_servers: dict[str, str],
    pki: Pki,  # noqa: F811
) -> None:
    """gRPC's mutual-TLS server hangs up on a client without a certificate, as a TLS proxy whose
    backend is not up does: waited for, and the line given up on names both."""
    env = {**scheduler_env, "SIDECAR_TARGET": tls_servers["mtls"], "SIDECAR_TLS_CA": str(pki.ca)}
    result = cli("doctor", "--timeout", "2", "--wait", "4", env=env, timeout=60)
    assert result.returncode == 1 and "not waiting" not in result.stderr, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"first thing to fix: sidecar: {tls_servers['mtls']} closed after the TLS handshake: it wants a "
        "client certificate (mutual TLS), or a proxy's backend is not up; pass --tls-cert and --tls-key "
        "(SIDECAR_TLS_CLIENT_CERT, SIDECAR_TLS_CLIENT_KEY)"
    )


def test_a_refused_connection_in_the_detail_does_not_skip_the_probe(tls_servers: dict[str, str]) -> None:
    """Dual stack: gRPC's last error may be ::1 refusing while 127.0.0.1 speaks TLS (gRPC's detail then)."""
    port = tls_servers["tls"].rpartition(":")[2]
    detail = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv6:%5B::1%5D:"
        f"{port}: Failed to connect to remote host: Connection refused"
    )
    found = tls_problem(detail, f"localhost:{port}", ClientSecurity(), 3.0)
    assert found is not None and "speaks TLS, but this client is set to plaintext" in found.line
