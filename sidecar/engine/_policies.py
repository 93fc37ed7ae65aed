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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.errors import UnsupportedFeature

#: Seconds a report stays valid; schedulers tick every loop (about a second).
DEFAULT_TTL = 300.0


@dataclass
class SchedulerPolicies:
    """The latest report of each scheduler (in memory: every replica receives ticks)."""

    ttl: float = DEFAULT_TTL
    clock: Callable[[], float] = time.monotonic
    _hooks: dict[str, tuple[str, float]] = field(default_factory=dict)

    def report(self, scheduler_id: str, mutation_hook: str) -> None:
        """Record one scheduler's report (an empty ``mutation_hook`` is Airflow's default no-op)."""
        if mutation_hook:
            self._hooks[scheduler_id or "?"] = (mutation_hook, self.clock())
        else:
            self._hooks.pop(scheduler_id or "?", None)

    def active_hooks(self) -> dict[str, str]:
        """``scheduler_id -> hook`` of the reports still valid."""
        now = self.clock()
        for key in [k for k, (_, at) in self._hooks.items() if now - at > self.ttl]:
            del self._hooks[key]
        return {k: hook for k, (hook, _) in self._hooks.items()}

    def check(self) -> None:
        """Refuse while a scheduler reports a non-default mutation hook.

        Raises:
            UnsupportedFeature: naming the hook and the scheduler that reported it.
        """
        hooks = self.active_hooks()
        if hooks:
            scheduler_id, hook = sorted(hooks.items())[0]
            raise UnsupportedFeature(
                f"a non-default task_instance_mutation_hook ({hook}, reported by scheduler "
                f"{scheduler_id}) would change the task instances Airflow creates; the sidecar "
                "cannot run it, so it does not create backfills while one is configured"
            )
