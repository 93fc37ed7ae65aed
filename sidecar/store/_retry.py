"""Transactions retried on transient failures, with bounded, jittered exponential backoff.

Only a whole transaction is retried, from its start, and only work that is safe to run
again: a materialise batch (its claim, rows and cursor commit together, so a retry after
an unknown commit outcome writes the *next* batch or nothing), reads, and the ledger's
changes, each of which re-reads and re-checks what it changes inside the transaction.
What is still failing after the last attempt reaches the caller as ``Aborted``
(serialization failure, deadlock) or ``Unavailable`` (connection, resources); any other
failure is raised at once, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._database import Database
from sidecar.store._failures import RETRYABLE, Failure, classify, error_for, is_database_failure

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Work run inside one transaction (or one read-only connection).
Work = Callable[[AsyncConnection], Awaitable[T]]

#: The jitter's own generator: the process's global ``random`` state is left alone.
_JITTER = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transaction is retried."""

    attempts: int = 3
    """Tries in all (1: no retry)."""
    first_delay: float = 0.05
    """Seconds before the first retry; doubled for each next one."""
    max_delay: float = 1.0
    """The longest wait between two tries."""

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based), with full jitter."""
        return _JITTER.uniform(0, min(self.max_delay, self.first_delay * 2 ** (retry - 1)))


@dataclass(frozen=True)
class Transactions:
    """Runs work in retried transactions on one database, counting failures by class."""

    db: Database
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    on_failure: Callable[[Failure], None] | None = None
    """Called with the class of every database failure, retried or not (metrics)."""

    async def write(self, work: Work[T]) -> T:
        """Run ``work`` in one transaction, committed at its end; retried as a whole."""
        return await self._run(work, write=True)

    async def read(self, work: Work[T]) -> T:
        """Run read-only ``work`` on one connection; retried as a whole."""
        return await self._run(work, write=False)

    @property
    def counted(self) -> bool:
        """Whether what it commits counts (metrics, logs): False in a :meth:`rehearsal`."""
        return True

    @property
    def can_rehearse(self) -> bool:
        """Whether :meth:`rehearsal` can undo what it runs: on PostgreSQL only.

        SQLite's driver opens no transaction on ``BEGIN`` (pysqlite's legacy handling), so the
        first savepoint opens it and releasing that savepoint commits it: a rehearsal would
        keep its rows.
        """
        return self.db.dialect == "postgresql"

    @contextlib.asynccontextmanager
    async def rehearsal(self) -> AsyncIterator[Transactions]:
        """Transactions that all run on one connection, inside one transaction rolled back at the end.

        Each read or write is a savepoint of it (released, or rolled back if it fails; never
        retried), so work rehearsed here compiles and prepares every statement it sends, on
        a connection of the pool, and leaves nothing behind (``serve``'s warm-up).

        Raises:
            RuntimeError: not :attr:`can_rehearse` (SQLite).
        """
        if not self.can_rehearse:
            raise RuntimeError(f"a rehearsal cannot be rolled back on {self.db.dialect}")
        async with self.db.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                yield _Rehearsal(self.db, self.policy, None, conn)
            finally:
                await transaction.rollback()

    async def _run(self, work: Work[T], *, write: bool) -> T:
        attempt = 1
        while True:
            try:
                if write:
                    async with self.db.engine.begin() as conn:
                        return await work(conn)
                async with self.db.engine.connect() as conn:
                    return await work(conn)
            except Exception as exc:
                if not is_database_failure(exc):
                    raise
                failure = classify(exc)
                if self.on_failure is not None:
                    self.on_failure(failure)
                if failure not in RETRYABLE:
                    raise
                if attempt >= self.policy.attempts:
                    error = error_for(exc)
                    assert error is not None  # every retryable failure has its error
                    raise error from exc
                log.warning(
                    "database %s (attempt %s of %s); retrying", failure.value, attempt, self.policy.attempts
                )
                await asyncio.sleep(self.policy.delay(attempt))
                attempt += 1


@dataclass(frozen=True)
class _Rehearsal(Transactions):
    """:meth:`Transactions.rehearsal`'s transactions: savepoints on one connection."""

    conn: AsyncConnection | None = None

    @property
    def counted(self) -> bool:
        return False

    async def _run(self, work: Work[T], *, write: bool) -> T:
        assert self.conn is not None
        async with self.conn.begin_nested():
            return await work(self.conn)
