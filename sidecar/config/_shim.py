"""How the scheduler shim calls the sidecar and shares the scheduler with backfills.

Airflow starts the scheduler, not us, so the shim has no flags: it is configured by
``SIDECAR_*`` variables alone, read once when the runner starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config import _env
from sidecar.config._client import DEFAULT_TARGET, ClientSecurity
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


#: Every variable the shim reads (:class:`ShimSettings` and :class:`ClientSecurity`), with what it does.
SHIM_VARIABLES: tuple[tuple[str, str], ...] = (
    ("SIDECAR_TARGET", f"the sidecar's host:port, or several comma-separated (default {DEFAULT_TARGET})"),
    ("SIDECAR_TOKEN", "bearer token sent with each Tick; its principal needs the role scheduler"),
    ("SIDECAR_TOKEN_FILE", "read the token from this file instead"),
    ("SIDECAR_TLS", "1: use TLS with the system's root certificates"),
    ("SIDECAR_TLS_CA", "PEM CA bundle to verify the sidecar (implies TLS)"),
    ("SIDECAR_TLS_CLIENT_CERT", "PEM client certificate for mutual TLS"),
    ("SIDECAR_TLS_CLIENT_KEY", "PEM key of that certificate"),
    ("SIDECAR_TICK_DEADLINE", "seconds a Tick may cost a scheduler loop, retries included (default 0.5)"),
    ("SIDECAR_BREAKER_THRESHOLD", "failed Ticks in a row that stop calling the sidecar (default 3)"),
    ("SIDECAR_BREAKER_COOLDOWN", "seconds without calls once stopped (default 30)"),
    ("SIDECAR_SHIM_FAIRNESS", "off: Airflow's own pick of runs to examine and start (default on)"),
    ("SIDECAR_MAX_RUNNING_BACKFILL_RUNS", "the most backfill runs running at once (default: no cap)"),
    ("SIDECAR_SHIM_STATS_INTERVAL", "seconds between the shim's loop-stats log lines (default 60)"),
)


def shim_help() -> str:
    """The section ``airflow-sidecar scheduler --help`` prints before Airflow's own help."""
    width = max(len(name) for name, _ in SHIM_VARIABLES)
    lines = [
        "usage: airflow-sidecar scheduler [AIRFLOW SCHEDULER ARGUMENTS...]",
        "",
        "Runs `airflow scheduler` (same arguments, below) with the sidecar shim: once per loop it",
        "calls the sidecar's Tick. It has no flags of its own; it reads these variables:",
        "",
        *(f"  {name:<{width}}  {text}" for name, text in SHIM_VARIABLES),
        "",
        "It logs its target and auth mode at start-up and a line when its first Tick succeeds.",
        "Check the set-up from this environment: airflow-sidecar doctor --as-scheduler",
        "",
        "Airflow's own help for `airflow scheduler` follows.",
        "",
    ]
    return "\n".join(lines)


def shim_auth_mode(security: ClientSecurity, environ: Environ | None = None) -> str:
    """How the shim authenticates, in words for its start-up log line (never the token itself)."""
    env = _env.environment(environ)
    if security.token is None:
        auth = "no token (Ticks are refused unless the sidecar runs --no-auth)"
    elif env.get("SIDECAR_TOKEN"):
        auth = "bearer token from SIDECAR_TOKEN"
    else:
        auth = "bearer token from SIDECAR_TOKEN_FILE"
    return f"{auth}, {'TLS' if security.uses_tls else 'plaintext'}"
