"""What the schedulers report about their cluster policies, and the refusal it implies.

A non-default ``task_instance_mutation_hook`` is arbitrary Python in the scheduler's
environment, run by Airflow on every task instance it creates (``verify_integrity``); it
can change any column, so rows the sidecar writes without it would silently differ from
Airflow's. The sidecar cannot see the scheduler's configuration, so the shim, which runs
inside the scheduler, reports the hook in every ``TickRequest``
(``task_instance_mutation_hook``: its dotted name, empty for Airflow's no-op). While any
scheduler's latest report names a hook, creating backfills is refused with
FAILED_PRECONDITION naming the feature and the hook, and windowed backfills stop writing
new runs. Reports expire (``ttl``), so a scheduler that is gone does not block forever; a
sidecar that has received no report yet knows nothing (docs/api.md says so).

What is kept is bounded: a scheduler id of at most 250 characters and a hook name of at
most 1,000 (longer reports are refused INVALID_ARGUMENT, keeping nothing), and at most
``max_schedulers`` reports (the least recently reporting scheduler is forgotten first).
The warning that runs are held back is logged when the set of reported hooks changes,
not on every tick, each name cut to a readable length.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.errors import InvalidArgument, UnsupportedFeature
from sidecar.vocabulary import counted

#: Seconds a report stays valid; schedulers tick every loop (about a second).
DEFAULT_TTL = 300.0

#: Longest scheduler id kept (Airflow's hostname-like ids are far shorter: ``Job.hostname`` is 500).
MAX_SCHEDULER_ID = 250
#: Longest hook name kept (a dotted Python path).
MAX_HOOK_NAME = 1_000
#: Schedulers tracked at once; the least recently reporting is forgotten beyond it.
MAX_SCHEDULERS = 256
#: Characters of each hook name shown in the log.
_LOGGED_NAME = 200

log = logging.getLogger(__name__)


def _cut(text: str) -> str:
    return text if len(text) <= _LOGGED_NAME else text[:_LOGGED_NAME] + "…"


@dataclass
class SchedulerPolicies:
    """The latest report of each scheduler (in memory: every replica receives ticks)."""

    ttl: float = DEFAULT_TTL
    clock: Callable[[], float] = time.monotonic
    max_schedulers: int = MAX_SCHEDULERS
    _hooks: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)
    _announced: frozenset[tuple[str, str]] = frozenset()

    def report(self, scheduler_id: str, mutation_hook: str) -> None:
        """Record one scheduler's report (an empty ``mutation_hook`` is Airflow's default no-op).

        Raises:
            InvalidArgument: the scheduler id or hook name is longer than anything real.
        """
        if len(scheduler_id) > MAX_SCHEDULER_ID:
            raise InvalidArgument(
                f"scheduler_id is longer than {MAX_SCHEDULER_ID} characters", field="scheduler_id"
            )
        if len(mutation_hook) > MAX_HOOK_NAME:
            raise InvalidArgument(
                f"task_instance_mutation_hook is longer than {MAX_HOOK_NAME} characters",
                field="task_instance_mutation_hook",
            )
        key = scheduler_id or "?"
        self._hooks.pop(key, None)
        if mutation_hook:
            self._hooks[key] = (mutation_hook, self.clock())  # most recent last
            while len(self._hooks) > self.max_schedulers:
                self._hooks.popitem(last=False)

    def active_hooks(self) -> dict[str, str]:
        """``scheduler_id -> hook`` of the reports still valid."""
        now = self.clock()
        for key in [k for k, (_, at) in self._hooks.items() if now - at > self.ttl]:
            del self._hooks[key]
        return {k: hook for k, (hook, _) in self._hooks.items()}

    def announce(self, hooks: dict[str, str]) -> None:
        """Log the reported hooks when they differ from the last ones logged (not every tick)."""
        current = frozenset(hooks.items())
        if current == self._announced:
            return
        self._announced = current
        if hooks:
            shown = ", ".join(f"{_cut(k)}: {_cut(v)}" for k, v in sorted(hooks.items()))
            log.warning(
                "not writing backfill runs: a task_instance_mutation_hook is reported by %s (%s)",
                counted(len(hooks), "scheduler"),
                shown,
            )
        else:
            log.info(
                "no scheduler reports a task_instance_mutation_hook any more: writing backfill runs again"
            )

    def check(self) -> None:
        """Refuse while a scheduler reports a non-default mutation hook.

        Raises:
            UnsupportedFeature: naming the hook and the scheduler that reported it.
        """
        hooks = self.active_hooks()
        if hooks:
            scheduler_id, hook = sorted(hooks.items())[0]
            raise UnsupportedFeature(
                f"a non-default task_instance_mutation_hook ({_cut(hook)}, reported by scheduler "
                f"{_cut(scheduler_id)}) would change the task instances Airflow creates; the sidecar "
                "cannot run it, so it does not create backfills while one is configured"
            )
