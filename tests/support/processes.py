"""Long-running servers of a test in their own process groups, and their readiness probes.

:class:`AirflowProcess` starts one command (an Airflow api-server or scheduler, a sidecar)
with a clean environment and its output in a log file, waits until a probe says it is
ready (failing at once, with the log tail, if it dies first), and stops its whole process
group. :func:`start_sidecar` runs ``airflow-sidecar serve`` that way until its gRPC health
check says SERVING; :mod:`tests.support.stack` does the same for Airflow's own servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.airflow import process_environ
from tests.support.ports import free_port
from tests.support.waiting import WaitTimeout, wait_until


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether GET ``url`` answers 2xx (connection errors and other statuses are False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def grpc_serving(target: str, timeout: float = 2.0) -> bool:
    """Whether ``grpc.health.v1.Health/Check`` at ``target`` answers SERVING (overall status)."""
    import grpc  # local: only tests that run a sidecar pay for the import
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving


@dataclass
class AirflowProcess:
    """One long-running process (api-server, scheduler, sidecar) in its own process group.

    Output goes to ``log_path``; :meth:`stop` sends SIGTERM to the whole group (Airflow
    forks executors, log servers and task runners) and SIGKILL after a grace period.
    """

    name: str
    command: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_file: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> AirflowProcess:
        """Start the process (stdout and stderr appended to ``log_path``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.command),
            env=process_environ(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The leader's pid (also the process group id)."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    def running(self) -> bool:
        """Whether the leader process is still alive."""
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it is true; fail at once if the process exits meanwhile.

        Raises:
            WaitTimeout: not ready in time, or the process died (the log tail is included).
        """

        def ready() -> bool:
            if not self.running():
                code = self.popen.returncode if self.popen else None
                raise WaitTimeout(f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}")
            return probe()

        wait_until(ready, timeout, 0.25, lambda: f"{self.name} readiness\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; return the exit code."""
        if self.popen is None:
            return None
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(10)
            # Children that outlived the leader (task runners, log server) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.returncode
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def start_until(self, probe: Callable[[], bool], timeout: float) -> AirflowProcess:
        """:meth:`start`, then :meth:`wait_ready`; the process is stopped if it never gets ready."""
        self.start()
        try:
            self.wait_ready(probe, timeout)
        except BaseException:
            self.stop()
            raise
        return self


def start_sidecar(
    database_url: str,
    log_dir: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 60.0,
    auth_args: Sequence[str] = ("--no-auth",),
) -> tuple[AirflowProcess, str]:
    """Start ``airflow-sidecar serve`` and wait until its gRPC health check says SERVING.

    Args:
        database_url: the sidecar's URL (``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``).
        log_dir: the log goes to ``log_dir/sidecar.log``.
        port: listen port on 127.0.0.1 (a free one by default).
        env: extra environment (e.g. an Airflow env for shared secrets).
        command: replaces ``python -m sidecar`` (the arguments ``serve --database-url
            ... --listen ...`` are appended).
        timeout: seconds to wait for SERVING.
        auth_args: the security flags; ``--no-auth`` (loopback) unless a test is about auth.

    Returns:
        ``(process, target)`` where ``target`` is ``127.0.0.1:PORT`` (for ``SIDECAR_TARGET``).
    """
    target = f"127.0.0.1:{port if port is not None else free_port()}"
    argv = [
        *(command or [sys.executable, "-m", "sidecar"]),
        "serve",
        "--database-url",
        database_url,
        "--listen",
        target,
        *auth_args,
    ]
    process = AirflowProcess("sidecar", argv, dict(env or {}), log_dir / "sidecar.log")
    return process.start_until(lambda: grpc_serving(target), timeout), target
