"""Stepping a plan under a budget: the allowance each step checks, and the worker process loop.

Planning is pure CPU work; the engine runs it off its event loop (``sidecar.engine``'s
planning pool), in a thread or in a worker process. This module is what those run: an
:class:`Allowance` that a job checks at every step (a stop flag set when its caller goes
away, and a CPU budget), and :func:`serve_jobs`, the loop of a worker process. It lives
with planning so that a worker process imports planning only, not the engine's database
stack.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar

__all__ = ["Allowance", "StopFlag", "lowest_priority", "serve_jobs"]

T = TypeVar("T")

#: Wall time a polite job (one in the server's own process) runs before it releases the GIL
#: for a moment, and that moment.
_SLICE_SECONDS = 0.001
_PAUSE_SECONDS = 0.0005


class StopFlag(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``: what a job checks at every step."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class Allowance:
    """What one planning job may still spend; checked by the job at every step.

    Attributes:
        stop: Set when the caller no longer waits; the job ends at its next step.
        cpu_seconds: CPU time (of the thread doing the work) the job may use; None: unlimited.
        cut: Whether an iteration ended early (stopped or over budget): a partial result.
    """

    def __init__(
        self, cpu_seconds: float | None, stop: StopFlag | None = None, *, polite: bool = False
    ) -> None:
        self.stop: StopFlag = stop if stop is not None else threading.Event()
        self.cpu_seconds = cpu_seconds
        self.cut = False
        self._polite = polite
        self._started = time.thread_time()
        self._slice_started = time.perf_counter()

    def begin(self) -> None:
        """Start the clocks, in the thread that does the work (CPU time is per thread)."""
        self._started = time.thread_time()
        self._slice_started = time.perf_counter()

    def spent(self) -> bool:
        """One step: True when the job must end now (stopped, or its CPU budget is spent)."""
        if self.stop.is_set():
            return True
        if self._polite and time.perf_counter() - self._slice_started > _SLICE_SECONDS:
            time.sleep(_PAUSE_SECONDS)  # in the server's process: let the event loop take the GIL
            self._slice_started = time.perf_counter()
        return self.cpu_seconds is not None and time.thread_time() - self._started > self.cpu_seconds

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, one step each, ending early (and setting :attr:`cut`) when spent."""
        for item in items:
            if self.spent():
                self.cut = True
                return
            yield item

    def count(self, items: Iterable[object], at_most: int) -> int:
        """How many of ``items`` there are, up to ``at_most`` (a lower bound when :attr:`cut`)."""
        return sum(1 for _ in itertools.islice(self.iterate(items), at_most))


def lowest_priority(pid: int = 0) -> None:
    """Run process ``pid`` (0: this one) only when a core has nothing else to do.

    ``SCHED_IDLE`` where the OS has it (Linux): any other thread that wakes up takes the core
    at once, whatever the scheduler's time slices; else the highest niceness.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, 19)


def serve_jobs(conn: Connection, stop: StopFlag) -> None:
    """A worker process: run ``(work, args, cpu_seconds)`` jobs from ``conn`` until it closes.

    Each job is ``work(*args, allowance)``; the answer is ``(True, (result, cut))`` or
    ``(False, "<exception>: <text>")``. The process runs at the lowest CPU priority
    (:func:`lowest_priority`), so the server's own threads always win a core.
    """
    lowest_priority()
    while True:
        try:
            work, args, cpu_seconds = conn.recv()
        except (EOFError, OSError):
            return
        allowance = Allowance(cpu_seconds, stop)
        try:
            reply: tuple[bool, Any] = (True, (work(*args, allowance), allowance.cut))
        except Exception as exc:  # reported to the caller
            reply = (False, f"{type(exc).__name__}: {exc}")
        conn.send(reply)
