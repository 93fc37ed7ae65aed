"""Classifying database failures by SQLSTATE, in one table, never by message text.

:func:`classify` names the class of a failure; :data:`RETRYABLE` are the transient ones
(SQLSTATE classes 08 connection, 40 transaction rollback, 53 insufficient resources,
57 operator intervention, and dropped sockets). :mod:`sidecar.store._retry` retries a
whole transaction on them with bounded backoff, where retrying is safe, and then
:func:`error_for` turns what is left into the caller-facing error: ``Aborted`` for
serialization failures and deadlocks, ``Unavailable`` for the rest. The gRPC layer maps
a database exception that reaches it the same way. Metrics count failures by class.
"""

from __future__ import annotations

import enum

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from sidecar.errors import Aborted, SidecarError, Unavailable


class Failure(enum.Enum):
    """What kind of database failure an exception is (the ``failure`` label of the metric)."""

    UNIQUE_VIOLATION = "unique_violation"
    FOREIGN_KEY_VIOLATION = "foreign_key_violation"
    SERIALIZATION = "serialization_failure"
    DEADLOCK = "deadlock"
    LOCK_NOT_AVAILABLE = "lock_not_available"
    QUERY_CANCELED = "query_canceled"
    RESOURCES = "insufficient_resources"
    CONNECTION = "connection"
    OTHER = "other"


# SQLSTATE codes (exact) first, then classes (first two characters).
_BY_SQLSTATE = {
    "23505": Failure.UNIQUE_VIOLATION,
    "23503": Failure.FOREIGN_KEY_VIOLATION,
    "40001": Failure.SERIALIZATION,
    "40P01": Failure.DEADLOCK,
    "55P03": Failure.LOCK_NOT_AVAILABLE,
    "57014": Failure.QUERY_CANCELED,  # statement_timeout or a cancel: not retried, it would recur
}
_BY_CLASS = {
    "08": Failure.CONNECTION,  # connection exception
    "40": Failure.SERIALIZATION,  # transaction rollback (other than the two above)
    "53": Failure.RESOURCES,  # insufficient resources (too many connections, disk full, out of memory)
    "57": Failure.CONNECTION,  # operator intervention (admin shutdown, crash shutdown)
}

#: Failures after which the same transaction may be tried again from the start.
RETRYABLE = frozenset({Failure.SERIALIZATION, Failure.DEADLOCK, Failure.RESOURCES, Failure.CONNECTION})

#: What each transient failure becomes for a caller once retries are spent.
_ERRORS: dict[Failure, tuple[type[SidecarError], str]] = {
    Failure.SERIALIZATION: (
        Aborted,
        "the metadata database aborted the transaction (serialization failure); retry",
    ),
    Failure.DEADLOCK: (Aborted, "the metadata database aborted the transaction (deadlock); retry"),
    Failure.RESOURCES: (Unavailable, "the metadata database is out of resources; retry"),
    Failure.CONNECTION: (Unavailable, "the metadata database is unreachable; retry"),
}


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database failure (asyncpg or SQLAlchemy-wrapped), if it carries one."""
    original = getattr(exc, "orig", None) or exc
    for candidate in (original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def classify(exc: BaseException) -> Failure:
    """The class of a database failure (asyncpg, SQLAlchemy-wrapped or a dropped socket)."""
    code = sqlstate_of(exc)
    if code is not None:
        return _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2], Failure.OTHER)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Failure.CONNECTION
    if isinstance(exc, InterfaceError | OperationalError | ConnectionError | TimeoutError):
        return Failure.CONNECTION
    if isinstance(exc, OSError):
        return Failure.CONNECTION
    return Failure.OTHER


def is_database_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from the database or the socket to it (what :func:`classify` is for)."""
    return isinstance(exc, DBAPIError | OSError)


def error_for(exc: BaseException) -> SidecarError | None:
    """The caller-facing error of a transient database failure; None for any other exception."""
    if not is_database_failure(exc):
        return None
    found = _ERRORS.get(classify(exc))
    if found is None:
        return None
    cls, message = found
    return cls(message)
