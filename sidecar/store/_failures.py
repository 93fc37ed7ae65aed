"""Classifying database failures by SQLSTATE, in one table, never by message text.

The engine retries only what is safe to retry (serialization failures, deadlocks,
lost connections); metrics count failures by class.
"""

from __future__ import annotations

import enum

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


class Failure(enum.Enum):
    """What kind of database failure an exception is."""

    UNIQUE_VIOLATION = "unique_violation"
    FOREIGN_KEY_VIOLATION = "foreign_key_violation"
    SERIALIZATION = "serialization_failure"
    DEADLOCK = "deadlock"
    LOCK_NOT_AVAILABLE = "lock_not_available"
    QUERY_CANCELED = "query_canceled"
    CONNECTION = "connection"
    OTHER = "other"


# SQLSTATE codes (exact) first, then classes (first two characters).
_BY_SQLSTATE = {
    "23505": Failure.UNIQUE_VIOLATION,
    "23503": Failure.FOREIGN_KEY_VIOLATION,
    "40001": Failure.SERIALIZATION,
    "40P01": Failure.DEADLOCK,
    "55P03": Failure.LOCK_NOT_AVAILABLE,
    "57014": Failure.QUERY_CANCELED,
}
_BY_CLASS = {
    "08": Failure.CONNECTION,  # connection exception
    "57": Failure.CONNECTION,  # operator intervention (admin shutdown, crash shutdown)
}

#: Failures after which the same transaction may be tried again from the start.
RETRYABLE = frozenset({Failure.SERIALIZATION, Failure.DEADLOCK, Failure.CONNECTION})


def _sqlstate(exc: BaseException) -> str | None:
    original = getattr(exc, "orig", None) or exc
    for candidate in (original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def classify(exc: BaseException) -> Failure:
    """The class of a database failure (asyncpg, SQLAlchemy-wrapped or a dropped socket)."""
    code = _sqlstate(exc)
    if code is not None:
        return _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2], Failure.OTHER)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Failure.CONNECTION
    if isinstance(exc, InterfaceError | OperationalError | ConnectionError | TimeoutError):
        return Failure.CONNECTION
    if isinstance(exc, OSError):
        return Failure.CONNECTION
    return Failure.OTHER
