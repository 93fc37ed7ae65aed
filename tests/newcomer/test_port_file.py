"""``serve --listen 127.0.0.1:0 --port-file F``: the system picks the port, the sidecar reports it.

This is how ``scripts/demo.sh`` avoids the race of choosing a free port and binding it later
(another process may take it in between).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.fixtures import AirflowDatabase
from tests.support.processes import grpc_serving
from tests.support.waiting import wait_until


def test_serve_on_port_zero_writes_the_bound_port(airflow_db: AirflowDatabase, tmp_path: Path) -> None:
    port_file = tmp_path / "sidecar.port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--no-auth",
            "--database-url",
            airflow_db.asyncpg_url,
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_file.exists(), timeout=60, message="no port file")
        port = int(port_file.read_text())
        assert port > 0
        assert grpc_serving(f"127.0.0.1:{port}")
        assert not list(tmp_path.glob("*.partial"))
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
