"""``airflowctl`` (PyPI ``apache-airflow-ctl``), Airflow's CLI for its REST API, in a venv of its own.

It is a client of Airflow's ``/api/v2`` only, so it needs no Airflow: it gets its own
small venv (cached, built once per machine, beside the per-version Airflow venvs of
``scripts/airflow_envs.sh``) rather than sharing the project's, whose pins it need not
satisfy. Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

#: The release tested (``airflowctl`` talks to Airflow 3.x's public API).
VERSION = "0.1.5"


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("SIDECAR_VENV_CACHE", Path(base) / "airflow-sidecar" / "venvs"))


def airflowctl() -> Path:
    """The ``airflowctl`` executable, its venv built first if it is not cached yet.

    Raises:
        subprocess.CalledProcessError: the venv could not be built (no index reachable).
    """
    venv = _cache() / f"airflowctl-{VERSION}"
    executable = venv / "bin" / "airflowctl"
    stamp = venv / ".stamp"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".airflowctl-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait, then reuse it
        if executable.exists() and stamp.exists() and stamp.read_text() == VERSION:
            return executable
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"apache-airflow-ctl=={VERSION}",
                "keyrings.alt",
            ],
            check=True,
            timeout=600,
        )
        stamp.write_text(VERSION)
    return executable
