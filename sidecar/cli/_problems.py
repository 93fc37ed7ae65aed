"""What a user did wrong, in one or two lines: database and sidecar problems turned into advice.

``serve``, ``doctor`` and the ``backfill`` commands meet the same mistakes (a wrong database
name, user, port or file; no sidecar at the target; a refused token). Each is described here
once, naming what was tried (never a password) and what to do, so no user sees a traceback
unless they ask for one with ``--debug``.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import grpc
from sqlalchemy.engine import URL, make_url

from sidecar.errors import SchemaMismatch, SchemaNotMigrated

#: Where the database URL comes from, for the advice lines.
URL_SETTING = "--database-url (SIDECAR_DATABASE_URL)"
#: How to get a token, for the advice lines.
TOKEN_ADVICE = (
    "pass a token with --token, --token-file or SIDECAR_TOKEN "
    "(mint one: airflow-sidecar token jwt --subject ME --role ROLE)"
)


def _parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except Exception:  # an unparsable URL is reported by connect(); here it only lacks a location
        return None


def _location(url: str) -> str:
    """``host:port`` of a server URL, or the file of a SQLite one."""
    parsed = _parse(url)
    if parsed is None:
        return "the database"
    if parsed.drivername.startswith("sqlite"):
        return f"SQLite file {parsed.database}"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist (opening it would create an empty one)."""
    parsed = _parse(url)
    if parsed is None or not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return None if path.exists() else path


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(state) if state else None


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def database_problem(exc: BaseException, url: str) -> str | None:
    """One or two lines for a database the sidecar cannot use; None for any other exception.

    Args:
        exc: what connecting or checking raised.
        url: the database URL tried (only its host, port, database and user are shown).
    """
    parsed = _parse(url)
    where = _location(url)
    if isinstance(exc, SchemaMismatch):
        return f"{exc} ({where})"
    state = _sqlstate(exc)
    if state == "3D000":
        name = parsed.database if parsed else "?"
        return f'database "{name}" does not exist on {where}; check the database name in {URL_SETTING}'
    if state is not None and state.startswith("28"):
        user = parsed.username if parsed else "?"
        return (
            f'{where} refused user "{user}" ({_driver_message(exc)}); '
            f"check the user and password in {URL_SETTING}"
        )
    if isinstance(exc, socket.gaierror):
        host = parsed.host if parsed else "?"
        if _resolving_later(exc):
            return (
                f"the database host {host!r} cannot be resolved yet (temporary failure in name "
                f"resolution: is DNS up?); check the host in {URL_SETTING}"
            )
        return f"unknown database host {host!r}; check the host in {URL_SETTING}"
    if _refused(exc):
        return (
            f"nothing accepts database connections at {where}; "
            f"check the host and port in {URL_SETTING} and that the database runs"
        )
    if isinstance(exc, TimeoutError):
        return f"no answer from the database at {where}; check the host and port in {URL_SETTING}"
    if state is not None:
        return f"the database at {where} refused the connection: {_driver_message(exc)}"
    if type(exc).__name__ == "OperationalError" and "unable to open database file" in str(exc):
        return f"cannot open the {where}; check the path in {URL_SETTING} and its directory's permissions"
    return None


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH)
    )


def _resolving_later(exc: BaseException) -> bool:
    """A host name the resolver could not look up *now* (``EAI_AGAIN``: DNS not ready, say)."""
    return isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN


def database_may_come_up(exc: BaseException) -> bool:
    """Whether waiting may cure it: nothing listens yet, no answer yet, PostgreSQL is starting,
    its host name cannot be resolved yet (``EAI_AGAIN``), or Airflow's migration has not made
    its schema yet (no ``alembic_version`` in an empty database or one with Airflow's tables).

    A wrong name, user, password, unknown host name or other schema is a setting: it fails
    the same way however long one waits.
    """
    return (
        _refused(exc)
        or isinstance(exc, TimeoutError | SchemaNotMigrated)
        or _resolving_later(exc)
        or _sqlstate(exc) == _CANNOT_CONNECT_NOW
    )


#: PostgreSQL's SQLSTATE while it starts up, shuts down or recovers ("the database system is starting up").
_CANNOT_CONNECT_NOW = "57P03"


def missing_file_problem(path: Path) -> str:
    """The line for a SQLite URL naming a file that does not exist."""
    return (
        f"the SQLite file {path} does not exist; check the path in {URL_SETTING} "
        "(it is Airflow's [database] sql_alchemy_conn file, created by `airflow db migrate`)"
    )


def start_advice(target: str) -> str:
    """What to do when nothing answers at ``target``."""
    return (
        f"nothing answers at {target}; start one with `airflow-sidecar serve --database-url URL` "
        "or point --target (SIDECAR_TARGET) at a running one"
    )


def rpc_problem(exc: grpc.RpcError, target: str) -> str:
    """``CODE: detail``, plus what to do for the codes a set-up mistake causes."""
    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code else "ERROR"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"{name}: cannot reach the sidecar: {start_advice(target)}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{name}: {detail}; {TOKEN_ADVICE}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{name}: no answer from the sidecar at {target} in time; raise --timeout or check its log"
    return f"{name}: {detail}"
