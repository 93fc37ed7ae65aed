"""How the scheduler shim calls the sidecar and shares the scheduler with backfills.

Airflow starts the scheduler, not us, so the shim has no flags: it is configured by
``SIDECAR_*`` variables alone, read once when the runner starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config import _env
from sidecar.config._client import DEFAULT_TARGET
from sidecar.config._env import Environ


@dataclass(frozen=True)
class ShimSettings:
    """The shim's knobs; each has a safe default, so an unset variable never stalls the scheduler."""

    target: str = DEFAULT_TARGET
    """One sidecar (``host:port``) or several (comma-separated IPv4 ``address:port``); ``SIDECAR_TARGET``."""
    tick_deadline: float = 0.5
    """Seconds a Tick may cost a scheduler loop, retries included; ``SIDECAR_TICK_DEADLINE``."""
    breaker_threshold: int = 3
    """Failures in a row that open the circuit breaker; ``SIDECAR_BREAKER_THRESHOLD``."""
    breaker_cooldown: float = 30.0
    """Seconds the open breaker makes no call; ``SIDECAR_BREAKER_COOLDOWN``."""
    fairness: bool = True
    """Examine and start the backfill runs Airflow's per-loop limits leave out; ``SIDECAR_SHIM_FAIRNESS=off`` turns it off."""
    max_running_backfill_runs: int | None = None
    """The most backfill runs running at once (None: no cap); ``SIDECAR_MAX_RUNNING_BACKFILL_RUNS``."""
    stats_interval: float = 60.0
    """Seconds between the shim's loop-stats log lines; ``SIDECAR_SHIM_STATS_INTERVAL``."""

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> ShimSettings:
        """Settings from the ``SIDECAR_*`` variables (default: the process environment).

        Raises:
            ValueError: a numeric variable is not a number (one line naming it).
        """
        env = _env.environment(environ)
        cap = "SIDECAR_MAX_RUNNING_BACKFILL_RUNS"
        return cls(
            target=_env.text(env, "SIDECAR_TARGET", DEFAULT_TARGET) or DEFAULT_TARGET,
            tick_deadline=_env.number(env, "SIDECAR_TICK_DEADLINE", cls.tick_deadline, float),
            breaker_threshold=_env.number(env, "SIDECAR_BREAKER_THRESHOLD", cls.breaker_threshold, int),
            breaker_cooldown=_env.number(env, "SIDECAR_BREAKER_COOLDOWN", cls.breaker_cooldown, float),
            fairness=_env.not_disabled(env, "SIDECAR_SHIM_FAIRNESS"),
            max_running_backfill_runs=_env.number(env, cap, 0, int) if (env.get(cap) or "").strip() else None,
            stats_interval=_env.number(env, "SIDECAR_SHIM_STATS_INTERVAL", cls.stats_interval, float),
        )
