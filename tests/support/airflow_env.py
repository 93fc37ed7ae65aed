"""Run a real Apache Airflow 3.3.2 next to the tests: metadata databases, DAGs, processes.

What lives here, and why:

* :func:`airflow_environ` builds the environment variables every Airflow process of a test
  shares (metadata DB, DAGs folder, JWT secret, execution API URL, fast scheduler
  settings). Airflow reads its configuration from ``AIRFLOW__SECTION__KEY`` variables, so a
  test never depends on the developer's ``airflow.cfg``; inherited ``AIRFLOW*`` variables
  are dropped for the same reason (see :func:`process_environ`).
* :func:`migrate_template` / :func:`fresh_airflow_database` make the real 3.3.2 schema
  cheap: ``airflow db migrate`` runs once per machine into the PostgreSQL database
  ``airflow_template_332``, and every test module clones it with
  ``CREATE DATABASE ... TEMPLATE`` (about a second instead of a full migration). The
  template carries a marker (a database comment naming the Airflow version and the
  alembic revision) so a template left by another Airflow version, or by an interrupted
  migration, is rebuilt instead of reused.
* :func:`serialize_dags` writes a DAGs folder into the metadata DB the way Airflow does
  (``airflow dags reserialize`` on the default ``dags-folder`` bundle), so no dag-processor
  has to run during tests. :func:`serialized_dags_template` does it once into a second
  template (keyed by the folder's content and the day), so a module's database is a pure
  clone.
* :class:`AirflowProcess` and :func:`airflow_stack` start ``airflow api-server`` (which
  also serves the execution API LocalExecutor's task processes call) and a scheduler
  command, wait until they are ready, and stop their whole process groups;
  :func:`start_sidecar` does the same for ``airflow-sidecar serve`` (gRPC health).
* :func:`wait_until` / :func:`async_wait_until`: poll, don't sleep.

The helpers only use the standard library and psycopg2 in the test process; Airflow
itself always runs in subprocesses (``python -m airflow``), exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions

T = TypeVar("T")

#: The Airflow release whose schema the tests run against (DESIGN.md, decision 1).
AIRFLOW_VERSION = "3.3.2"
#: Name of the migrated template database that per-module test databases are cloned from.
TEMPLATE_DATABASE = "airflow_template_332"

#: The PostgreSQL server the tests use; overridable for unusual machines.
PG_HOST = os.environ.get("SIDECAR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SIDECAR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SIDECAR_TEST_PG_USER", "postgres")

#: One JWT secret shared by the api-server (which signs task tokens) and the scheduler and
#: task processes (which present them). Long enough for HS512 without key-length warnings.
JWT_SECRET = "airflow-sidecar-tests-jwt-secret-0123456789abcdef0123456789abcdef0123"
#: A fixed, valid Fernet key so that Airflow does not warn about unencrypted connections.
FERNET_KEY = "0ZqyY5Pm0BJq3vW7kxdRI5dWbDQGf7JbpW3IEv9wAJU="

_ADVISORY_LOCK_KEY = 0x51DECA5  # serialises template builds across concurrent pytest runs
_OBJECT_IN_USE = "55006"  # SQLSTATE: "source database is being accessed by other users"


# --------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    """A polled condition did not become true in time (an AssertionError so pytest shows it)."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.2,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Args:
        predicate: a cheap check; exceptions propagate (a broken check should fail fast).
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: what was awaited (or a callable producing it, e.g. with a log tail).

    Raises:
        WaitTimeout: the predicate stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {text}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float,  # noqa: ASYNC109 (this helper *is* the timeout primitive, mirroring wait_until)
    interval: float = 0.2,
    message: str | Callable[[], str] = "condition",
) -> T:
    """The asyncio twin of :func:`wait_until`: awaits ``predicate()`` until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {text}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def to_airflow_url(url: str) -> str:
    """Turn a sidecar (async driver) database URL into the sync one Airflow uses.

    ``postgresql+asyncpg://`` becomes ``postgresql+psycopg2://`` and
    ``sqlite+aiosqlite:///`` becomes ``sqlite:///``; other URLs pass through.
    """
    for prefix, replacement in (
        ("postgresql+asyncpg://", "postgresql+psycopg2://"),
        ("postgresql://", "postgresql+psycopg2://"),
        ("sqlite+aiosqlite://", "sqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def airflow_environ(
    airflow_home: Path,
    sql_alchemy_conn: str,
    dags_folder: Path,
    *,
    api_port: int | None = None,
    **extra: str,
) -> dict[str, str]:
    """Return the ``AIRFLOW*`` variables that make a self-contained Airflow 3.3.2 instance.

    Only these variables are returned; :func:`process_environ` merges them into a clean
    copy of ``os.environ`` for a subprocess.

    Args:
        airflow_home: ``AIRFLOW_HOME`` (``airflow.cfg``, logs, the simple auth manager's
            generated passwords file land here); created if missing.
        sql_alchemy_conn: metadata DB URL; async driver URLs are converted (asyncpg ->
            psycopg2, aiosqlite -> plain sqlite) because Airflow's processes are sync.
        dags_folder: ``[core] dags_folder``, i.e. the default ``dags-folder`` bundle.
        api_port: port of ``airflow api-server``; a free one is picked when omitted. The
            execution API URL that task processes call is derived from it.
        **extra: more variables (full names, e.g. ``AIRFLOW__CORE__PARALLELISM="2"`` or
            ``SIDECAR_TARGET=...``); they override the defaults.
    """
    airflow_home.mkdir(parents=True, exist_ok=True)
    port = api_port if api_port is not None else free_port()
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": to_airflow_url(sql_alchemy_conn),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": FERNET_KEY,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # The api-server serves the execution API; LocalExecutor's task runners call it.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
        # Simple auth manager, everyone admin: the api-server starts without prompts and
        # the REST API answers without a login.
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Fast loops so a five-run backfill takes seconds, not minutes.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The scheduler's own health server doubles as its readiness probe; its log server
        # and health server get free ports so parallel test runs do not collide on
        # 8793/8974.
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    }
    env.update(extra)
    return env


def process_environ(env: Mapping[str, str]) -> dict[str, str]:
    """Return ``os.environ`` without inherited Airflow settings, plus ``env``.

    Inherited ``AIRFLOW_HOME`` / ``AIRFLOW__*`` variables from a developer's shell would
    otherwise leak into the test instance. The interpreter's ``bin`` directory is put
    first on ``PATH`` so ``airflow`` and ``airflow-sidecar`` resolve to this venv.
    """
    base = {
        key: value
        for key, value in os.environ.items()
        if not (key == "AIRFLOW_HOME" or key.startswith("AIRFLOW__") or key.startswith("AIRFLOW_CONN_"))
    }
    bin_dir = str(Path(sys.executable).parent)
    base["PATH"] = os.pathsep.join([bin_dir, base.get("PATH", "")])
    base["PYTHONUNBUFFERED"] = "1"
    base.update(env)
    return base


def run_airflow(
    env: Mapping[str, str],
    *args: str,
    timeout: float = 180.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one ``airflow`` CLI command (``python -m airflow ARGS``) and return its output.

    Raises:
        RuntimeError: the command failed; the message carries the output's tail.
    """
    command = [sys.executable, "-m", "airflow", *args]
    result = subprocess.run(
        command,
        env=process_environ(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(args)!r} exited with {result.returncode}:\n{tail}")
    return result


# --------------------------------------------------------------------------------------
# PostgreSQL: template and per-module databases
# --------------------------------------------------------------------------------------


def asyncpg_url(database: str) -> str:
    """SQLAlchemy URL for the sidecar (asyncpg) to ``database`` on the test server."""
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def psycopg2_url(database: str) -> str:
    """SQLAlchemy URL for Airflow (psycopg2) to ``database`` on the test server."""
    return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def pg_connect(database: str = "postgres", *, connect_timeout: int = 5) -> psycopg2.extensions.connection:
    """Open an autocommit psycopg2 connection (needed for CREATE/DROP DATABASE)."""
    conn = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, connect_timeout=connect_timeout
    )
    conn.autocommit = True
    return conn


def pg_is_reachable(timeout: float = 3.0) -> bool:
    """Whether the test PostgreSQL server accepts a connection right now."""
    try:
        conn = pg_connect(connect_timeout=max(1, int(timeout)))
    except psycopg2.OperationalError:
        return False
    conn.close()
    return True


def installed_airflow_version() -> str | None:
    """The installed apache-airflow version, read without importing Airflow (slow)."""
    try:
        return importlib.metadata.version("apache-airflow")
    except importlib.metadata.PackageNotFoundError:
        return None


_MARKER_PREFIX = "airflow-sidecar test template:"


def _template_marker(version: str, revision: str) -> str:
    """The comment written on the template once ``airflow db migrate`` has completed."""
    return f"{_MARKER_PREFIX} apache-airflow=={version} alembic={revision} complete"


def _parse_marker(comment: str | None) -> tuple[str, str] | None:
    """``(airflow_version, alembic_revision)`` from a complete template's marker, else None."""
    if not comment or not comment.startswith(_MARKER_PREFIX) or not comment.endswith(" complete"):
        return None
    fields = dict(part.split("=", 1) for part in comment.split() if "=" in part)
    version = fields.get("apache-airflow", "").lstrip("=")
    revision = fields.get("alembic", "")
    return (version, revision) if version and revision else None


def _database_comment(cur: psycopg2.extensions.cursor, name: str) -> str | None:
    """The comment of database ``name``: None if it has none, '' if it does not exist."""
    cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,))
    row = cur.fetchone()
    if row is None:
        return ""
    comment: str | None = row[0]
    return comment


def _terminate_connections(cur: psycopg2.extensions.cursor, name: str) -> None:
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def _drop_database(cur: psycopg2.extensions.cursor, name: str) -> None:
    # IS_TEMPLATE databases cannot be dropped; FORCE ends leftover sessions (PG 13+).
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if cur.fetchone() is None:
        return
    cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true')
    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class TemplateInfo:
    """What :func:`migrate_template` built or found."""

    name: str
    airflow_version: str
    alembic_revision: str
    built: bool
    """True when this call ran ``airflow db migrate``; False when a valid template was reused."""
    seconds: float


def migrate_template(
    *,
    name: str = TEMPLATE_DATABASE,
    rebuild: bool = False,
    work_dir: Path | None = None,
) -> TemplateInfo:
    """Make sure ``name`` holds a complete Airflow schema for the installed Airflow.

    The template is reused when its marker (database comment) names the installed Airflow
    version; otherwise it is rebuilt: ``airflow db migrate`` runs into a scratch database,
    which is renamed to ``name`` only after the migration succeeded and then frozen
    (``IS_TEMPLATE``, no connections) so that nobody holds a session on it while it is
    cloned. A PostgreSQL advisory lock serialises concurrent builders (parallel pytest
    runs on one machine).

    Args:
        name: template database name.
        rebuild: drop and rebuild even if the template looks valid.
        work_dir: where the throw-away ``AIRFLOW_HOME`` for the migration goes.

    Raises:
        RuntimeError: Airflow is not installed, or the migration failed.
    """
    started = time.monotonic()
    version = installed_airflow_version()
    if version is None:
        raise RuntimeError("apache-airflow is not installed; cannot build the Airflow schema template")
    conn = pg_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
            try:
                found = _parse_marker(_database_comment(cur, name))
                if not rebuild and found is not None and found[0] == version:
                    return TemplateInfo(name, version, found[1], False, time.monotonic() - started)
                revision = _build_template(cur, name, version, work_dir)
                return TemplateInfo(name, version, revision, True, time.monotonic() - started)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    finally:
        conn.close()


def _build_template(cur: psycopg2.extensions.cursor, name: str, version: str, work_dir: Path | None) -> str:
    scratch = f"{name}_build"
    _drop_database(cur, scratch)
    cur.execute(f'CREATE DATABASE "{scratch}"')
    home = Path(tempfile.mkdtemp(prefix="airflow-template-", dir=work_dir))
    try:
        env = airflow_environ(home / "home", psycopg2_url(scratch), home / "dags")
        (home / "dags").mkdir()
        run_airflow(env, "db", "migrate", timeout=600)
    except BaseException:
        _drop_database(cur, scratch)
        raise
    finally:
        shutil.rmtree(home, ignore_errors=True)
    check = pg_connect(scratch)
    try:
        with check.cursor() as ccur:
            ccur.execute("SELECT version_num FROM alembic_version")
            rows = ccur.fetchall()
    finally:
        check.close()
    if len(rows) != 1:
        raise RuntimeError(f"unexpected alembic_version rows after migrate: {rows!r}")
    revision: str = rows[0][0]
    _drop_database(cur, name)
    _terminate_connections(cur, scratch)
    cur.execute(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"')
    cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
    marker = _template_marker(version, revision).replace("'", "")
    cur.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")
    return revision


def fresh_airflow_database(
    name: str, *, template: str = TEMPLATE_DATABASE, attempts: int = 20
) -> tuple[str, str]:
    """Drop and re-create database ``name`` as a clone of the migrated template.

    Cloning fails while any session is connected to the template, so those sessions are
    ended first and the clone is retried briefly (``55006 object_in_use``).

    Returns:
        ``(asyncpg_url, psycopg2_url)`` of the new database.
    """
    if name == template or not name.replace("_", "").isalnum():
        raise ValueError(f"invalid test database name: {name!r}")
    conn = pg_connect()
    try:
        with conn.cursor() as cur:
            # Shared: clones run in parallel, but never while a template is (re)built.
            cur.execute("SELECT pg_advisory_lock_shared(%s)", (_ADVISORY_LOCK_KEY,))
            _drop_database(cur, name)
            for attempt in range(attempts):
                _terminate_connections(cur, template)
                try:
                    cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    break
                except psycopg2.Error as exc:
                    if exc.pgcode != _OBJECT_IN_USE or attempt == attempts - 1:
                        raise
                    time.sleep(0.1 * (attempt + 1))
            cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true')
            cur.execute(f'COMMENT ON DATABASE "{name}" IS NULL')
            cur.execute("SELECT pg_advisory_unlock_shared(%s)", (_ADVISORY_LOCK_KEY,))
    finally:
        conn.close()
    return asyncpg_url(name), psycopg2_url(name)


def drop_database(name: str) -> None:
    """Drop a test database, ending its sessions first (no error if it is gone)."""
    conn = pg_connect()
    try:
        with conn.cursor() as cur:
            _drop_database(cur, name)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# DAGs
# --------------------------------------------------------------------------------------


def _sql_in_metadata_db(
    env: Mapping[str, str], sql: str, params: Sequence[object] = ()
) -> list[tuple[object, ...]]:
    """Run one statement in the metadata DB named by ``env`` (PostgreSQL or SQLite)."""
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as lite:
            cursor = lite.execute(sql.replace("%s", "?"), tuple(params))
            rows = cursor.fetchall()
            lite.commit()
            return rows
    parts = urlsplit(url)
    conn = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=parts.path.lstrip("/"),
    )
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def set_dags_paused(env: Mapping[str, str], paused: bool, dag_ids: Iterable[str] | None = None) -> None:
    """Pause or unpause DAGs directly in the metadata DB (all DAGs when ``dag_ids`` is None).

    Same effect as ``airflow dags pause|unpause`` without starting an Airflow CLI process.
    """
    if dag_ids is None:
        _sql_in_metadata_db(env, "UPDATE dag SET is_paused = %s", (paused,))
        return
    for dag_id in dag_ids:
        _sql_in_metadata_db(env, "UPDATE dag SET is_paused = %s WHERE dag_id = %s", (paused, dag_id))


def metadata_query(
    env: Mapping[str, str], sql: str, params: Sequence[object] = ()
) -> list[tuple[object, ...]]:
    """Run one statement (``%s`` placeholders) in ``env``'s metadata DB and return its rows.

    Works for PostgreSQL and SQLite alike, so tests and the demo check state the same way.
    """
    return _sql_in_metadata_db(env, sql, params)


def serialize_dags(
    env: Mapping[str, str],
    dags_folder: Path | None = None,
    *,
    unpause: bool | Iterable[str] = True,
) -> list[str]:
    """Write a DAGs folder into the metadata DB exactly as Airflow does, without a dag-processor.

    Runs ``airflow dags reserialize``: it syncs the configured bundles (the default
    ``dags-folder`` bundle reads ``[core] dags_folder``) to the ``dag_bundle`` table, parses
    the folder and writes ``dag``, ``dag_version``, ``serialized_dag`` and ``dag_code``.

    Args:
        env: from :func:`airflow_environ`.
        dags_folder: overrides ``AIRFLOW__CORE__DAGS_FOLDER`` of ``env``.
        unpause: True unpauses every DAG, an iterable unpauses those ids, False none.

    Returns:
        The ids of the serialized DAGs, sorted.

    Raises:
        RuntimeError: reserialisation failed, or a DAG file had an import error.
    """
    run_env = dict(env)
    if dags_folder is not None:
        run_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    run_airflow(run_env, "dags", "reserialize")
    errors = _sql_in_metadata_db(run_env, "SELECT filename, stacktrace FROM import_error")
    if errors:
        raise RuntimeError(f"DAG import errors: {errors!r}")
    dag_ids = sorted(
        str(row[0]) for row in _sql_in_metadata_db(run_env, "SELECT DISTINCT dag_id FROM serialized_dag")
    )
    if unpause is True:
        set_dags_paused(run_env, False)
    elif unpause:
        set_dags_paused(run_env, False, unpause)
    return dag_ids


_DAGS_MARKER_PREFIX = "airflow-sidecar dags template:"


def _dags_fingerprint(dags_folder: Path, version: str, base: str, unpause: bool) -> str:
    """Hash of everything a serialized-DAGs template depends on.

    The folder's absolute path and every file's content (Airflow stores ``fileloc`` and
    the DAG structure), the Airflow version and base template, and today's UTC date:
    ``dag.next_dagrun*`` are computed from "now" at serialisation, so a template is not
    reused across days.
    """
    digest = hashlib.sha256()
    for part in (
        version,
        base,
        str(dags_folder.resolve()),
        str(unpause),
        time.strftime("%Y-%m-%d", time.gmtime()),
    ):
        digest.update(part.encode() + b"\0")
    for path in sorted(dags_folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(dags_folder)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def serialized_dags_template(
    dags_folder: Path,
    *,
    base: str = TEMPLATE_DATABASE,
    unpause: bool = True,
    work_dir: Path | None = None,
) -> tuple[str, list[str]]:
    """A template database: ``base`` plus ``dags_folder`` serialized (and unpaused).

    ``airflow dags reserialize`` costs about three seconds; doing it once per DAGs-folder
    content (and day) instead of once per test module makes a module's database a pure
    ``CREATE DATABASE ... TEMPLATE`` clone. Templates of earlier days are dropped.

    Returns:
        ``(template_name, dag_ids)``.

    Raises:
        RuntimeError: serialisation failed or a DAG file has an import error.
    """
    version = installed_airflow_version() or "none"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    name = f"{base}_dags_{_dags_fingerprint(dags_folder, version, base, unpause)}"
    conn = pg_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
            try:
                comment = _database_comment(cur, name)
                if comment and comment.startswith(_DAGS_MARKER_PREFIX) and comment.endswith(" complete"):
                    dag_ids = comment.split("dags=", 1)[1].split()[0]
                    return name, [d for d in dag_ids.split(",") if d]
                cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{base}_dags_%",))
                for (other,) in cur.fetchall():
                    other_comment = _database_comment(cur, other) or ""
                    if other != name and f" day={today} " not in other_comment:
                        _drop_database(cur, other)
                scratch = f"{name}_build"
                _drop_database(cur, scratch)
                cur.execute(f'CREATE DATABASE "{scratch}" TEMPLATE "{base}"')
                home = Path(tempfile.mkdtemp(prefix="airflow-dags-template-", dir=work_dir))
                try:
                    env = airflow_environ(home / "home", psycopg2_url(scratch), dags_folder)
                    dag_ids_list = serialize_dags(env, dags_folder, unpause=unpause)
                except BaseException:
                    _drop_database(cur, scratch)
                    raise
                finally:
                    shutil.rmtree(home, ignore_errors=True)
                _drop_database(cur, name)
                _terminate_connections(cur, scratch)
                cur.execute(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"')
                cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
                marker = f"{_DAGS_MARKER_PREFIX} day={today} dags={','.join(dag_ids_list)} complete"
                cur.execute(f'COMMENT ON DATABASE "{name}" IS %s', (marker,))
                return name, dag_ids_list
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether GET ``url`` answers 2xx (connection errors and other statuses are False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass
class AirflowProcess:
    """One long-running process (api-server, scheduler, sidecar) in its own process group.

    Output goes to ``log_path``; :meth:`stop` sends SIGTERM to the whole group (Airflow
    forks executors, log servers and task runners) and SIGKILL after a grace period.
    """

    name: str
    command: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_file: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> AirflowProcess:
        """Start the process (stdout and stderr appended to ``log_path``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.command),
            env=process_environ(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The leader's pid (also the process group id)."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    def running(self) -> bool:
        """Whether the leader process is still alive."""
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it is true; fail at once if the process exits meanwhile.

        Raises:
            WaitTimeout: not ready in time, or the process died (the log tail is included).
        """

        def ready() -> bool:
            if not self.running():
                code = self.popen.returncode if self.popen else None
                raise WaitTimeout(f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}")
            return probe()

        wait_until(ready, timeout, 0.25, lambda: f"{self.name} readiness\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; return the exit code."""
        if self.popen is None:
            return None
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(10)
            # Children that outlived the leader (task runners, log server) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.returncode
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def api_server_health_url(env: Mapping[str, str]) -> str:
    """The api-server's public health endpoint for ``env``."""
    return f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/monitor/health"


def scheduler_health_url(env: Mapping[str, str]) -> str:
    """The scheduler's own health server (200 once its job row is heartbeating)."""
    return f"http://127.0.0.1:{env['AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT']}/health"


def start_api_server(env: Mapping[str, str], log_dir: Path, *, timeout: float = 90.0) -> AirflowProcess:
    """Start ``airflow api-server`` on ``env``'s port and wait until it answers health checks."""
    process = AirflowProcess(
        "api-server",
        [
            sys.executable,
            "-m",
            "airflow",
            "api-server",
            "--port",
            env["AIRFLOW__API__PORT"],
            "--host",
            "127.0.0.1",
        ],
        env,
        log_dir / "api-server.log",
    ).start()
    try:
        process.wait_ready(lambda: http_ok(api_server_health_url(env)), timeout)
    except BaseException:
        process.stop()
        raise
    return process


def start_scheduler(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    command: Sequence[str] | None = None,
    timeout: float = 90.0,
) -> AirflowProcess:
    """Start a scheduler (default ``python -m airflow scheduler``) and wait until it heartbeats.

    ``command`` replaces the default, e.g. ``["airflow-sidecar", "scheduler"]``; readiness
    is the scheduler health server, which both variants run.
    """
    argv = list(command) if command is not None else [sys.executable, "-m", "airflow", "scheduler"]
    process = AirflowProcess("scheduler", argv, env, log_dir / "scheduler.log").start()
    try:
        process.wait_ready(lambda: http_ok(scheduler_health_url(env)), timeout)
    except BaseException:
        process.stop()
        raise
    return process


def grpc_serving(target: str, timeout: float = 2.0) -> bool:
    """Whether ``grpc.health.v1.Health/Check`` at ``target`` answers SERVING (overall status)."""
    import grpc  # local: only tests that run a sidecar pay for the import
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving


def start_sidecar(
    database_url: str,
    log_dir: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 60.0,
    auth_args: Sequence[str] = ("--no-auth",),
) -> tuple[AirflowProcess, str]:
    """Start ``airflow-sidecar serve`` and wait until its gRPC health check says SERVING.

    Args:
        database_url: the sidecar's URL (``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``).
        log_dir: the log goes to ``log_dir/sidecar.log``.
        port: listen port on 127.0.0.1 (a free one by default).
        env: extra environment (e.g. an Airflow env for shared secrets).
        command: replaces ``python -m sidecar`` (the arguments ``serve --database-url
            ... --listen ...`` are appended).
        auth_args: the security flags; ``--no-auth`` (loopback) unless a test is about auth.

    Returns:
        ``(process, target)`` where ``target`` is ``127.0.0.1:PORT`` (for ``SIDECAR_TARGET``).
    """
    target = f"127.0.0.1:{port if port is not None else free_port()}"
    argv = [
        *(command or [sys.executable, "-m", "sidecar"]),
        "serve",
        "--database-url",
        database_url,
        "--listen",
        target,
        *auth_args,
    ]
    process = AirflowProcess("sidecar", argv, dict(env or {}), log_dir / "sidecar.log").start()
    try:
        process.wait_ready(lambda: grpc_serving(target), timeout)
    except BaseException:
        process.stop()
        raise
    return process, target


@dataclass
class AirflowStack:
    """The running api-server and scheduler of one test."""

    env: Mapping[str, str]
    log_dir: Path
    api_server: AirflowProcess
    scheduler: AirflowProcess

    @property
    def api_url(self) -> str:
        """Base URL of the api-server (public REST API under ``/api/v2``)."""
        return f"http://127.0.0.1:{self.env['AIRFLOW__API__PORT']}"

    def assert_running(self) -> None:
        """Fail with the log tail if either process has died."""
        for process in (self.api_server, self.scheduler):
            if not process.running():
                raise AssertionError(f"{process.name} died:\n{process.log_tail()}")


@contextlib.contextmanager
def airflow_stack(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    scheduler_command: Sequence[str] | None = None,
    timeout: float = 90.0,
) -> Iterator[AirflowStack]:
    """Run ``airflow api-server`` and a scheduler for the duration of a ``with`` block.

    The api-server starts first because LocalExecutor's task processes call its execution
    API; both are stopped (scheduler first) even if the block fails.
    """
    api_server = start_api_server(env, log_dir, timeout=timeout)
    try:
        scheduler = start_scheduler(env, log_dir, command=scheduler_command, timeout=timeout)
        try:
            yield AirflowStack(env, log_dir, api_server, scheduler)
        finally:
            scheduler.stop()
    finally:
        api_server.stop()
