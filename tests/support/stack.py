"""Airflow's own servers for end-to-end tests: ``airflow api-server`` and a scheduler.

The api-server also serves the execution API that LocalExecutor's task processes call, so
it starts first; a scheduler (Airflow's, or the shim's ``airflow-sidecar scheduler``) is
ready once its health server answers, which means its job row is heartbeating.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import AirflowProcess, http_ok


def api_server_health_url(env: Mapping[str, str]) -> str:
    """The api-server's public health endpoint for ``env``."""
    return f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/monitor/health"


def scheduler_health_url(env: Mapping[str, str]) -> str:
    """The scheduler's own health server (200 once its job row is heartbeating)."""
    return f"http://127.0.0.1:{env['AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT']}/health"


def start_api_server(env: Mapping[str, str], log_dir: Path, *, timeout: float = 90.0) -> AirflowProcess:
    """Start ``airflow api-server`` on ``env``'s port and wait until it answers health checks."""
    process = AirflowProcess(
        "api-server",
        [
            sys.executable,
            "-m",
            "airflow",
            "api-server",
            "--port",
            env["AIRFLOW__API__PORT"],
            "--host",
            "127.0.0.1",
        ],
        env,
        log_dir / "api-server.log",
    )
    return process.start_until(lambda: http_ok(api_server_health_url(env)), timeout)


def start_scheduler(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    command: Sequence[str] | None = None,
    timeout: float = 90.0,
) -> AirflowProcess:
    """Start a scheduler (default ``python -m airflow scheduler``) and wait until it heartbeats.

    ``command`` replaces the default, e.g. ``["airflow-sidecar", "scheduler"]``; readiness
    is the scheduler health server, which both variants run.
    """
    argv = list(command) if command is not None else [sys.executable, "-m", "airflow", "scheduler"]
    process = AirflowProcess("scheduler", argv, env, log_dir / "scheduler.log")
    return process.start_until(lambda: http_ok(scheduler_health_url(env)), timeout)


@dataclass
class AirflowStack:
    """The running api-server and scheduler of one test."""

    env: Mapping[str, str]
    log_dir: Path
    api_server: AirflowProcess
    scheduler: AirflowProcess

    @property
    def api_url(self) -> str:
        """Base URL of the api-server (public REST API under ``/api/v2``)."""
        return f"http://127.0.0.1:{self.env['AIRFLOW__API__PORT']}"

    def assert_running(self) -> None:
        """Fail with the log tail if either process has died."""
        for process in (self.api_server, self.scheduler):
            if not process.running():
                raise AssertionError(f"{process.name} died:\n{process.log_tail()}")


@contextlib.contextmanager
def airflow_stack(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    scheduler_command: Sequence[str] | None = None,
    timeout: float = 90.0,
) -> Iterator[AirflowStack]:
    """Run ``airflow api-server`` and a scheduler for the duration of a ``with`` block.

    Both are stopped (scheduler first) even if the block fails.
    """
    api_server = start_api_server(env, log_dir, timeout=timeout)
    try:
        scheduler = start_scheduler(env, log_dir, command=scheduler_command, timeout=timeout)
        try:
            yield AirflowStack(env, log_dir, api_server, scheduler)
        finally:
            scheduler.stop()
    finally:
        api_server.stop()
