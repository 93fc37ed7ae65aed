"""Planning off the event loop: a bounded pool of low-priority worker processes, under a budget.

Stepping a timetable is CPU work in Python (croniter in a zone with daylight saving costs
about half a millisecond a slot), and a call may ask for millions of slots. On the event
loop it stalls every other call; in a thread it still takes the GIL from the loop (ten
such threads made a trivial RPC 85 times slower) and burns a core after its caller has
gone. So every enumeration a call makes runs here, as a module-level function
``work(*args, allowance)``:

1. First in a thread (named ``sidecar-planning-…``) with a few milliseconds of CPU: small
   plans, the common case, answer at once without leaving the process.
2. A job that needs more is run again in a worker process (started on first use, kept
   for the next job, shared by the process's pools, at the lowest CPU priority so the
   server's own threads always win a core), under the call's CPU budget. A thread of the
   same name waits for its answer.

At most ``workers`` jobs run at once; further calls wait their turn, and beyond ``queue``
waiting calls are refused ``RESOURCE_EXHAUSTED`` with a retry delay. Each step of a job
checks an :class:`Allowance`: a stop event, set as soon as the caller stops waiting (its
deadline passed, it disconnected, the handler was cancelled), and the CPU budget; so a job
outlives its caller by at most one step, and the waiting thread ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sidecar.errors import ResourceExhausted
from sidecar.planning import Allowance, StopFlag, lowest_priority, serve_jobs

__all__ = ["THREAD_PREFIX", "PlanningFailed", "PlanningPool"]

T = TypeVar("T")

#: Every planning thread's name starts with it (tests and operators count them).
THREAD_PREFIX = "sidecar-planning"

#: CPU a job may spend in-process before it moves to a worker process ("a few milliseconds").
IN_PROCESS_CPU_SECONDS = 0.005

#: Idle worker processes, shared by every pool of the process (they hold no state). They are
#: daemons: the server's exit ends them, and a worker whose parent died sees its pipe close.
_IDLE: list[_Worker] = []

#: ``run``'s default budget: the pool's own.
_POOL_BUDGET = object()


class PlanningFailed(RuntimeError):
    """A planning job raised in its worker process (the text names the exception)."""


class _Worker:
    """One worker process, its end of the pipe and its stop event."""

    def __init__(self, context: Any, name: str) -> None:
        self.conn, child = context.Pipe()
        self.stop = context.Event()
        self.process = context.Process(target=serve_jobs, args=(child, self.stop), name=name, daemon=True)
        self.process.start()
        child.close()
        lowest_priority(self.process.pid or 0)  # already while it imports planning


class PlanningPool:
    """At most ``workers`` planning jobs at once; waiting callers bounded by ``queue``."""

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
        self._context = multiprocessing.get_context("spawn")  # never fork a threaded server

    async def run(
        self, work: Callable[..., T], *args: Any, cpu_seconds: float | object | None = _POOL_BUDGET
    ) -> T:
        """``work(*args, allowance)`` off the event loop; stopped if the caller goes.

        Args:
            work: A module-level function (it may run in another process) that steps
                through ``Allowance.iterate``/``count``/``spent``; picklable arguments.
            cpu_seconds: This job's CPU budget (default: the pool's; None: unlimited).

        Raises:
            ResourceExhausted: too many planning jobs are waiting already.
            PlanningFailed: the job raised in a worker process.
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
        budget = self.cpu_seconds if cpu_seconds is _POOL_BUDGET else cast("float | None", cpu_seconds)
        try:
            quick = Allowance(IN_PROCESS_CPU_SECONDS, polite=True)
            result = await self._in_thread(lambda: work(*args, quick), quick.stop, quick.begin)
            if not quick.cut:
                self._slots.release()
                return result
            worker = _IDLE.pop() if _IDLE else self._start_worker()
        except BaseException:
            self._slots.release()
            raise
        return await self._in_worker(worker, work, args, budget)  # the slot is freed with the worker

    async def _in_thread(
        self, job: Callable[[], T], stop: StopFlag, begin: Callable[[], None] = lambda: None
    ) -> T:
        """Run ``job`` in a new planning thread; ``stop`` is set when the caller stops waiting."""
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
                begin()
                result: T | None = job()
                error: BaseException | None = None
            except BaseException as exc:  # delivered to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(deliver, result, error)

        name = f"{self._prefix}-{next(self._names)}"
        threading.Thread(target=target, name=name, daemon=True).start()
        try:
            return await future
        finally:
            stop.set()  # the caller is done (answered, cancelled or timed out)

    async def _in_worker(
        self, worker: _Worker, work: Callable[..., T], args: tuple[Any, ...], budget: float | None
    ) -> T:
        loop = asyncio.get_running_loop()
        worker.stop.clear()

        def exchange() -> tuple[bool, Any]:
            healthy = True
            try:
                worker.conn.send((work, args, budget))
                reply: tuple[bool, Any] = worker.conn.recv()
            except (EOFError, OSError) as exc:  # the worker died
                healthy = False
                reply = (False, f"planning worker lost: {exc or type(exc).__name__}")
            # Only now is the worker free, also when its caller went away a step ago.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._free, worker, healthy)
            return reply

        ok, value = await self._in_thread(exchange, worker.stop)
        if not ok:
            raise PlanningFailed(value)
        result, _cut = value
        return result  # type: ignore[no-any-return]

    def _free(self, worker: _Worker, healthy: bool) -> None:
        if healthy and worker.process.is_alive():
            _IDLE.append(worker)
        else:
            _discard(worker)
        self._slots.release()

    def _start_worker(self) -> _Worker:
        return _Worker(self._context, f"{THREAD_PREFIX}-process-{next(_PROCESS_NAMES)}")


_PROCESS_NAMES = itertools.count(1)


def _discard(worker: _Worker) -> None:
    worker.conn.close()
    if worker.process.is_alive():
        worker.process.terminate()
