"""The Airflow plugin's entry point, made visible to an api-server started by a test or benchmark.

Airflow finds the plugin by its ``airflow.plugins`` entry point, declared in
``pyproject.toml``. A venv installed from a checkout older than that declaration lacks it in
its metadata until ``pip install -e .`` runs again, and the matrix's venvs
(``scripts/airflow_envs.sh``) hold the project's dependencies, not the project; then (and only then)
:func:`entry_point_path` writes a minimal distribution declaring exactly the entry point
``pyproject.toml`` declares, for the api-server's ``PYTHONPATH``. Standard library only.
"""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINT_GROUP = "airflow.plugins"


def declared_entry_point() -> tuple[str, str]:
    """The ``airflow.plugins`` entry point ``pyproject.toml`` declares: (name, value)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    ((name, value),) = project["entry-points"][ENTRY_POINT_GROUP].items()
    return name, value


def entry_point_path(work: Path) -> str | None:
    """A directory to put on the api-server's path when the installed metadata lacks the entry point."""
    name, value = declared_entry_point()
    installed = {(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if (name, value) in installed:
        return None
    dist = work / "entry-point" / "airflow_sidecar_plugin_entry_point-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: airflow-sidecar-plugin-entry-point\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {value}\n")
    return str(dist.parent)


def plugin_pythonpath(work: Path) -> str:
    """``PYTHONPATH`` for an api-server that must load this checkout's plugin."""
    path = [entry_point_path(work), str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]
    return os.pathsep.join(p for p in path if p)
