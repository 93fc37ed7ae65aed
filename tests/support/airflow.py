"""A self-contained Airflow 3.3.2 instance: its environment variables and its CLI.

Airflow reads its configuration from ``AIRFLOW__SECTION__KEY`` variables, so a test never
depends on the developer's ``airflow.cfg``: :func:`airflow_environ` builds the variables
every Airflow process of a test shares (metadata DB, DAGs folder, JWT secret, execution
API URL, fast scheduler settings), and :func:`process_environ` drops inherited ``AIRFLOW*``
variables for the same reason. Airflow itself always runs in subprocesses
(``python -m airflow``), exactly as in production; this module never imports it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

#: The Airflow release whose schema the tests run against (DESIGN.md, decision 1): the newest
#: (the project's ``.venv``) unless ``SIDECAR_TEST_AIRFLOW`` names an older minor's newest patch,
#: run with that version's environment (``scripts/airflow_envs.sh``, ``scripts/airflow_matrix.sh``).
NEWEST_AIRFLOW = "3.3.2"
AIRFLOW_VERSION = os.environ.get("SIDECAR_TEST_AIRFLOW", NEWEST_AIRFLOW)

#: One JWT secret shared by the api-server (which signs task tokens) and the scheduler and
#: task processes (which present them). Long enough for HS512 without key-length warnings.
JWT_SECRET = "airflow-sidecar-tests-jwt-secret-0123456789abcdef0123456789abcdef0123"
#: A fixed, valid Fernet key so that Airflow does not warn about unencrypted connections.
FERNET_KEY = "0ZqyY5Pm0BJq3vW7kxdRI5dWbDQGf7JbpW3IEv9wAJU="


def installed_airflow_version() -> str | None:
    """The installed apache-airflow version, read without importing Airflow (slow)."""
    try:
        return importlib.metadata.version("apache-airflow")
    except importlib.metadata.PackageNotFoundError:
        return None


def to_airflow_url(url: str) -> str:
    """Turn a sidecar (async driver) database URL into the sync one Airflow uses.

    ``postgresql+asyncpg://`` becomes ``postgresql+psycopg2://`` and
    ``sqlite+aiosqlite:///`` becomes ``sqlite:///``; other URLs pass through.
    """
    for prefix, replacement in (
        ("postgresql+asyncpg://", "postgresql+psycopg2://"),
        ("postgresql://", "postgresql+psycopg2://"),
        ("sqlite+aiosqlite://", "sqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def airflow_environ(
    airflow_home: Path,
    sql_alchemy_conn: str,
    dags_folder: Path,
    *,
    api_port: int | None = None,
    **extra: str,
) -> dict[str, str]:
    """Return the ``AIRFLOW*`` variables that make a self-contained Airflow 3.3.2 instance.

    Only these variables are returned; :func:`process_environ` merges them into a clean
    copy of ``os.environ`` for a subprocess.

    Args:
        airflow_home: ``AIRFLOW_HOME`` (``airflow.cfg``, logs, the simple auth manager's
            generated passwords file land here); created if missing.
        sql_alchemy_conn: metadata DB URL; async driver URLs are converted (asyncpg ->
            psycopg2, aiosqlite -> plain sqlite) because Airflow's processes are sync.
        dags_folder: ``[core] dags_folder``, i.e. the default ``dags-folder`` bundle.
        api_port: port of ``airflow api-server``; a free one is picked when omitted. The
            execution API URL that task processes call is derived from it.
        **extra: more variables (full names, e.g. ``AIRFLOW__CORE__PARALLELISM="2"`` or
            ``SIDECAR_TARGET=...``); they override the defaults.
    """
    airflow_home.mkdir(parents=True, exist_ok=True)
    port = api_port if api_port is not None else free_port()
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": to_airflow_url(sql_alchemy_conn),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": FERNET_KEY,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # The api-server serves the execution API; LocalExecutor's task runners call it.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
        # Simple auth manager, everyone admin: the api-server starts without prompts and
        # the REST API answers without a login.
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Fast loops so a five-run backfill takes seconds, not minutes.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The scheduler's own health server doubles as its readiness probe; its log server
        # and health server get free ports so parallel test runs do not collide on
        # 8793/8974.
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        # Generous timeouts for a loaded test machine (two cores shared by several suites): a
        # task process that parses its DAG file, calls the execution API or heartbeats slowly
        # must not be failed for it. Defaults: 30 s import, 5 s per API call, 3 missed
        # heartbeats, 30 s scheduler health. None of these decide an outcome a test asserts.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "30",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "300",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "300",
    }
    env.update(extra)
    return env


def process_environ(env: Mapping[str, str]) -> dict[str, str]:
    """Return ``os.environ`` without inherited Airflow settings, plus ``env``.

    Inherited ``AIRFLOW_HOME`` / ``AIRFLOW__*`` variables from a developer's shell would
    otherwise leak into the test instance. The interpreter's ``bin`` directory is put
    first on ``PATH`` so ``airflow`` and ``airflow-sidecar`` resolve to this venv.
    """
    base = {
        key: value
        for key, value in os.environ.items()
        if not (key == "AIRFLOW_HOME" or key.startswith("AIRFLOW__") or key.startswith("AIRFLOW_CONN_"))
    }
    bin_dir = str(Path(sys.executable).parent)
    base["PATH"] = os.pathsep.join([bin_dir, base.get("PATH", "")])
    base["PYTHONUNBUFFERED"] = "1"
    base.update(env)
    return base


def run_module(
    module: str, env: Mapping[str, str], *args: str, timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` of this interpreter, in :func:`process_environ`; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=process_environ(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_airflow(
    env: Mapping[str, str],
    *args: str,
    timeout: float = 180.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one ``airflow`` CLI command (``python -m airflow ARGS``) and return its output.

    Raises:
        RuntimeError: the command failed; the message carries the output's tail.
    """
    result = run_module("airflow", env, *args, timeout=timeout, cwd=cwd)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(args)!r} exited with {result.returncode}:\n{tail}")
    return result


def run_probe(
    script: Path, options: Mapping[str, object], env: Mapping[str, str], timeout: float = 240
) -> Any:
    """Run a probe script (``python SCRIPT '<options json>'``) with Airflow configured by ``env``.

    A probe drives Airflow's own code in a process of its own (Airflow's ORM configuration
    is process-global) and prints ``RESULTS <json>`` as its last line; that JSON is returned.
    """
    probe = subprocess.run(
        [sys.executable, str(script), json.dumps(options)],
        env=process_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert probe.returncode == 0, (probe.stdout + probe.stderr)[-4000:]
    last = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else ""
    assert last.startswith("RESULTS "), (probe.stdout + probe.stderr)[-4000:]
    return json.loads(last.removeprefix("RESULTS "))
