"""A real Airflow 3.3.2 api-server with the plugin, beside one without it, and a real sidecar.

The plugin is found the way Airflow finds every plugin: its ``airflow.plugins`` entry point
(see :mod:`tests.support.plugin` for a venv installed before ``pyproject.toml`` declared it).

Users are Airflow's simple auth manager's (``admin`` with role ADMIN, ``viewer`` with role
VIEWER, fixed passwords); their tokens come from Airflow's own ``POST /auth/token``. The
api-server's token to the sidecar is a JWT with the sidecar's ``delegate`` role.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.support.airflow import JWT_SECRET
from tests.support.fixtures import AirflowDatabase
from tests.support.plugin import plugin_pythonpath
from tests.support.ports import free_port
from tests.support.processes import AirflowProcess, start_sidecar
from tests.support.stack import start_api_server

PASSWORDS = {"admin": "admin-password", "viewer": "viewer-password"}
DELEGATE = "airflow-api-server"
#: The sidecar's policy: the api-server delegates for anyone (Airflow authorised them); the
#: principal ``plain`` may do everything as itself, but holds no ``delegate`` role.
POLICY = """
[[rule]]
roles = ["delegate"]
dags = ["*"]
actions = ["*"]

[[rule]]
principals = ["plain"]
dags = ["*"]
actions = ["*"]
"""


def sidecar_jwt(subject: str, role: str | None = None) -> str:
    """An HS512 JWT the sidecar accepts (Airflow's shared secret and audience)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "aud": "apache-airflow",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, JWT_SECRET, algorithm="HS512")


def api_environ(base: Mapping[str, str], tmp: Path, *, all_admins: bool, **extra: str) -> dict[str, str]:
    """An api-server's environment: its own port, the test users, the plugin's entry point."""
    port = free_port()
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    return {
        **base,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(all_admins),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "PYTHONPATH": plugin_pythonpath(tmp),
        **extra,
    }


@dataclass
class PluginStack:
    """A sidecar and two api-servers on one metadata DB: ``on`` has the plugin, ``off`` has not."""

    db: AirflowDatabase
    sidecar: AirflowProcess
    target: str
    on: AirflowProcess
    on_url: str
    off: AirflowProcess | None
    off_url: str

    def token(self, user: str) -> str:
        """A token for ``user`` from Airflow's own ``POST /auth/token``."""
        answer = httpx.post(
            f"{self.on_url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
        )
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token

    def headers(self, user: str) -> dict[str, str]:
        """``Authorization`` headers for ``user``."""
        return {"Authorization": f"Bearer {self.token(user)}"}


def url_of(env: Mapping[str, str]) -> str:
    """The api-server's base URL."""
    return f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"


@contextlib.contextmanager
def plugin_stack(
    db: AirflowDatabase, tmp: Path, *, all_admins: bool, with_off: bool
) -> Iterator[PluginStack]:
    """Start the sidecar (JWT auth, the policy above), the api-server with the plugin and,
    with ``with_off``, one without it; stop them all afterwards."""
    logs = tmp / "logs"
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    sidecar, target = start_sidecar(
        db.asyncpg_url,
        logs,
        env={"SIDECAR_JWT_SECRET": JWT_SECRET},
        auth_args=("--policy", str(policy)),
    )
    started: list[AirflowProcess] = [sidecar]
    try:
        on_env = api_environ(
            db.env,
            tmp,
            all_admins=all_admins,
            SIDECAR_TARGET=target,
            SIDECAR_TOKEN=sidecar_jwt(DELEGATE, "delegate"),
        )
        on = start_api_server(on_env, logs / "on", timeout=180)
        started.append(on)
        off = None
        off_url = ""
        if with_off:
            off_env = api_environ(db.env, tmp, all_admins=all_admins)
            off = start_api_server(off_env, logs / "off", timeout=180)
            started.append(off)
            off_url = url_of(off_env)
        yield PluginStack(db, sidecar, target, on, url_of(on_env), off, off_url)
    finally:
        for process in reversed(started):
            process.stop()
