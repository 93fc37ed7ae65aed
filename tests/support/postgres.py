"""The test PostgreSQL server: connections, URLs, cloning and dropping databases.

Every test module that needs Airflow's schema gets its own database, cloned from a
template with ``CREATE DATABASE ... TEMPLATE`` (:func:`fresh_airflow_database`); the templates
themselves are built by :mod:`tests.support.templates`. Builders and cloners coordinate
through one PostgreSQL advisory lock (:func:`template_lock`): builders take it
exclusively, clones share it, so parallel pytest runs on one machine never clone a
half-built template.

This is the only module of the package that imports psycopg2 at import time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TypeAlias

import psycopg2
import psycopg2.extensions

from tests.support.airflow import AIRFLOW_VERSION

#: The PostgreSQL server the tests use; overridable for unusual machines.
PG_HOST = os.environ.get("SIDECAR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SIDECAR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SIDECAR_TEST_PG_USER", "postgres")

#: Name of the migrated template database that per-module test databases are cloned from: one per
#: Airflow version under test (``airflow_template_332``, ``airflow_template_318``, ...).
TEMPLATE_DATABASE = f"airflow_template_{AIRFLOW_VERSION.replace('.', '')}"

_ADVISORY_LOCK_KEY = 0x51DECA5  # serialises template builds across concurrent pytest runs
_OBJECT_IN_USE = "55006"  # SQLSTATE: "source database is being accessed by other users"

#: A psycopg2 cursor (of an autocommit connection, for the database-level statements here).
Cursor: TypeAlias = psycopg2.extensions.cursor


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


@contextlib.contextmanager
def template_lock(cur: Cursor, *, shared: bool = False) -> Iterator[None]:
    """Hold the template advisory lock on ``cur``'s session for a ``with`` block.

    Args:
        cur: a cursor of an autocommit connection (the lock is session-level).
        shared: True for clones (they may run in parallel), False for template builders.
    """
    kind = "_shared" if shared else ""
    cur.execute(f"SELECT pg_advisory_lock{kind}(%s)", (_ADVISORY_LOCK_KEY,))
    try:
        yield
    finally:
        cur.execute(f"SELECT pg_advisory_unlock{kind}(%s)", (_ADVISORY_LOCK_KEY,))


def database_comment(cur: Cursor, name: str) -> str | None:
    """The comment of database ``name``: None if it has none, '' if it does not exist."""
    cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,))
    row = cur.fetchone()
    if row is None:
        return ""
    comment: str | None = row[0]
    return comment


def terminate_connections(cur: Cursor, name: str) -> None:
    """End every other session connected to database ``name``."""
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def drop_database_on(cur: Cursor, name: str) -> None:
    """Drop database ``name`` through ``cur`` if it exists, template or not, sessions or not."""
    # IS_TEMPLATE databases cannot be dropped; FORCE ends leftover sessions (PG 13+).
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if cur.fetchone() is None:
        return
    cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true')
    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def freeze_as_template(cur: Cursor, scratch: str, name: str, marker: str) -> None:
    """Replace template ``name`` by the finished database ``scratch``, marked ``marker``.

    The rename happens only after the build succeeded, and the template is frozen
    (``IS_TEMPLATE``, no connections) so that nobody holds a session on it while it is
    cloned; the marker (a database comment) says the build completed.
    """
    drop_database_on(cur, name)
    terminate_connections(cur, scratch)
    cur.execute(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"')
    cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
    cur.execute(f'COMMENT ON DATABASE "{name}" IS %s', (marker,))


def fresh_airflow_database(
    name: str, *, template: str = TEMPLATE_DATABASE, attempts: int = 20
) -> tuple[str, str]:
    """Drop and re-create database ``name`` as a clone of ``template`` (Airflow's schema).

    Cloning fails while any session is connected to the template, so those sessions are
    ended first and the clone is retried briefly (``55006 object_in_use``).

    Returns:
        ``(asyncpg_url, psycopg2_url)`` of the new database.

    Raises:
        ValueError: ``name`` is the template itself or not a plain identifier.
    """
    if name == template or not name.replace("_", "").isalnum():
        raise ValueError(f"invalid test database name: {name!r}")
    conn = pg_connect()
    try:
        with conn.cursor() as cur, template_lock(cur, shared=True):
            drop_database_on(cur, name)
            for attempt in range(attempts):
                terminate_connections(cur, template)
                try:
                    cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    break
                except psycopg2.Error as exc:
                    if exc.pgcode != _OBJECT_IN_USE or attempt == attempts - 1:
                        raise
                    time.sleep(0.1 * (attempt + 1))
            cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true')
            cur.execute(f'COMMENT ON DATABASE "{name}" IS NULL')
    finally:
        conn.close()
    return asyncpg_url(name), psycopg2_url(name)


def drop_database(name: str) -> None:
    """Drop a test database, ending its sessions first (no error if it is gone)."""
    conn = pg_connect()
    try:
        with conn.cursor() as cur:
            drop_database_on(cur, name)
    finally:
        conn.close()
