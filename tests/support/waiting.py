"""Poll, don't sleep: wait for a condition with a deadline, in sync and asyncio code.

Standard library only, so any test (unit tests included) and the benchmarks can use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


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
