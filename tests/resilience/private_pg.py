"""A throwaway PostgreSQL 15 server of a test's own, so that the test may restart it.

The shared test server is never restarted (other tests run on it). This one lives in a
temporary directory on a free port, holds a copy (``pg_dump | pg_restore``) of a test
database, and is removed afterwards. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.postgres import PG_HOST, PG_PORT, PG_USER

BIN = Path(os.environ.get("SIDECAR_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def unavailable_reason() -> str | None:
    """Why a private server cannot be started here, or None if it can."""
    if not (BIN / "initdb").exists() or not (BIN / "pg_ctl").exists():
        return f"initdb/pg_ctl not found in {BIN}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    return None


@dataclass
class PrivatePostgres:
    """A running private server: ``port``, and ``restart`` for the fault."""

    data_dir: Path
    port: int

    def _run(self, *argv: str) -> None:
        command = [str(BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir / "data"),
            "-o",
            options,
            "-l",
            str(self.data_dir / "log"),
            "-w",
            "start",
        )

    def restart(self, mode: str = "immediate") -> None:
        """Stop (``immediate``: like a crash, recovery at start-up; ``fast``: clean) and start again."""
        self._run("pg_ctl", "-D", str(self.data_dir / "data"), "-m", mode, "-w", "stop")
        self.start()

    def url(self, database: str, driver: str = "asyncpg") -> str:
        """A SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def private_postgres_with(database: str) -> Iterator[PrivatePostgres]:
    """A private server holding a copy of ``database`` from the shared test server."""
    root = Path(tempfile.mkdtemp(prefix="sidecar-private-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(root, free_port())
    try:
        server._run("initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        server.start()
        dump = subprocess.run(
            ["pg_dump", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-Fc", database],
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", database],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                "pg_restore",
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-U",
                "postgres",
                "-d",
                database,
                "--no-owner",
            ],
            input=dump,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield server
    finally:
        with contextlib.suppress(Exception):
            server._run("pg_ctl", "-D", str(root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
