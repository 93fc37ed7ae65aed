"""How the Airflow plugin (inside Airflow's api-server) reaches the sidecar.

Airflow starts the api-server, not us, so the plugin has no flags: it is configured by
``SIDECAR_*`` variables in the api-server's environment alone, read once when Airflow loads
the plugin. ``SIDECAR_TARGET`` switches it on; without it the plugin registers nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sidecar.config import _env
from sidecar.config._client import ClientSecurity
from sidecar.config._env import Environ

#: ``SIDECAR_PLUGIN_FALLBACK`` values: answer 503 while the sidecar is down, or let Airflow answer.
FALLBACKS = ("none", "airflow")


@dataclass(frozen=True)
class PluginSettings:
    """The plugin's knobs; ``target`` None means the plugin is off."""

    target: str | None = None
    """The sidecar's gRPC address; ``SIDECAR_TARGET`` (unset: the plugin registers nothing)."""
    timeout: float = 60.0
    """Seconds per call to the sidecar; ``SIDECAR_PLUGIN_TIMEOUT``."""
    fallback: str = "none"
    """``airflow``: while the sidecar is unreachable, Airflow's own routes answer (its slow path);
    ``none`` (the default): 503. ``SIDECAR_PLUGIN_FALLBACK``."""
    security: ClientSecurity = dataclasses.field(default_factory=ClientSecurity)
    """The api-server's own token (role ``delegate``) and TLS files, from the client variables."""

    @property
    def enabled(self) -> bool:
        """Whether the plugin answers Airflow's backfill routes."""
        return self.target is not None

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> PluginSettings:
        """Settings from the ``SIDECAR_*`` variables (default: the process environment).

        Raises:
            ValueError: a bad number or fallback value, or an unreadable token file (one line).
        """
        env = _env.environment(environ)
        target = (_env.text(env, "SIDECAR_TARGET") or "").strip() or None
        fallback = (_env.text(env, "SIDECAR_PLUGIN_FALLBACK", "none") or "none").strip().lower()
        if fallback not in FALLBACKS:
            raise ValueError(
                f"SIDECAR_PLUGIN_FALLBACK must be one of {', '.join(FALLBACKS)}, not {fallback!r}"
            )
        return cls(
            target=target,
            timeout=_env.number(env, "SIDECAR_PLUGIN_TIMEOUT", cls.timeout, float),
            fallback=fallback,
            security=ClientSecurity.from_env(env) if target else ClientSecurity(),
        )
