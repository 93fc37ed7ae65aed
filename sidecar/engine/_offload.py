"""Planning off the event loop: a bounded pool of worker threads, each step under a budget.

Stepping a timetable is CPU work (croniter in a time zone with daylight saving costs about
half a millisecond a slot), and a call may ask for millions of slots. Done on the event
loop it stalls every other call; done in an unbounded thread it burns a core after its
caller has gone. So every enumeration a call makes runs here:

- in a worker thread named ``sidecar-planning-…``, at most ``workers`` of them at once;
  further calls wait their turn, and beyond ``queue`` waiting calls are refused
  ``RESOURCE_EXHAUSTED`` with a retry delay;
- under an :class:`Allowance`: each step checks a ``threading.Event`` set when the caller
  stops waiting (its deadline passed, it disconnected, the handler was cancelled) and the
  call's CPU budget, so a worker outlives its caller by at most one step;
- politely: every couple of milliseconds of CPU a worker sleeps briefly, releasing the GIL
  so the event loop never waits long for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from sidecar.errors import ResourceExhausted

__all__ = ["THREAD_PREFIX", "Allowance", "PlanningPool"]

T = TypeVar("T")

#: Every planning worker thread's name starts with it (tests and operators count them).
THREAD_PREFIX = "sidecar-planning"

#: CPU a worker spends before it releases the GIL for a moment, and how long that moment is.
_SLICE_SECONDS = 0.002
_PAUSE_SECONDS = 0.0002


class Allowance:
    """What one planning job may still spend; checked by the worker at every step.

    Attributes:
        stop: Set when the caller no longer waits; the worker ends at its next step.
        cpu_seconds: CPU time (of the worker thread) the job may use; None: unlimited.
        cut: Whether an iteration ended early (stopped or over budget): a partial result.
    """

    def __init__(self, cpu_seconds: float | None, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.cpu_seconds = cpu_seconds
        self.cut = False
        self._started = time.thread_time()
        self._slice_started = time.perf_counter()

    def spent(self) -> bool:
        """One step: True when the job must end now (stopped, or its CPU budget is spent)."""
        if self.stop.is_set():
            return True
        if time.perf_counter() - self._slice_started > _SLICE_SECONDS:
            time.sleep(_PAUSE_SECONDS)  # let the event loop take the GIL
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


class PlanningPool:
    """At most ``workers`` planning threads at once; waiting callers bounded by ``queue``."""

    def __init__(
        self, *, workers: int = 2, queue: int = 32, cpu_seconds: float | None = 10.0, name: str = ""
    ) -> None:
        self.cpu_seconds = cpu_seconds
        """Default CPU budget of one job; None: unlimited (background counts)."""
        self._slots = asyncio.Semaphore(workers)
        self._queue = queue
        self._waiting = 0
        self._names = itertools.count(1)
        self._prefix = f"{THREAD_PREFIX}-{name}" if name else THREAD_PREFIX

    async def run(self, work: Callable[[Allowance], T], *, cpu_seconds: float | None = -1.0) -> T:
        """Run ``work`` in a worker thread with an :class:`Allowance`; stop it if the caller goes.

        Args:
            work: The CPU-bound job; it must step through ``Allowance.iterate``/``spent``.
            cpu_seconds: This job's CPU budget (default: the pool's; None: unlimited).

        Raises:
            ResourceExhausted: too many planning jobs are waiting already.
        """
        if self._waiting >= self._queue:
            raise ResourceExhausted(
                "the server is busy planning other requests; retry shortly", retry_after=1.0
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            budget = self.cpu_seconds if cpu_seconds == -1.0 else cpu_seconds
            return await self._in_thread(work, Allowance(budget))
        finally:
            self._slots.release()

    async def _in_thread(self, work: Callable[[Allowance], T], allowance: Allowance) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def target() -> None:
            try:
                result: T | None = work(allowance)
                error: BaseException | None = None
            except BaseException as exc:  # delivered to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(deliver, result, error)

        name = f"{self._prefix}-{next(self._names)}"
        # A daemon: shutdown never waits for planning; the stop event ends it within a step.
        threading.Thread(target=target, name=name, daemon=True).start()
        try:
            return await future
        finally:
            allowance.stop.set()  # the caller is done (answered, cancelled or timed out)
