"""Leaves stay light at run time: what importing a client-side module really loads.

The static contracts live in pyproject's ``[tool.importlinter]`` (``lint-imports`` in
scripts/test.sh). This test checks the consequence that matters inside Airflow's scheduler:
importing the shim's Tick client, or ``sidecar.auth``, loads no server-side package and no
database, planning or schema library (issue 9: it used to load 40 sidecar modules and SQLAlchemy).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_SIDE = ("sidecar.store", "sidecar.engine", "sidecar.planning", "sidecar.catalog", "sidecar.api")
SERVER_SIDE += ("sidecar.server", "sidecar.gateway", "sidecar.cli")
LIBRARIES = ("sqlalchemy", "asyncpg", "aiosqlite", "croniter", "jsonschema", "airflow")


def _loaded_by(module: str) -> list[str]:
    code = f"import sys, {module}; import json; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize("module", ["airflow_shim.client", "sidecar.auth"])
def test_client_side_imports_load_nothing_of_the_server(module: str) -> None:
    loaded = _loaded_by(module)
    server = [m for m in loaded if m.startswith(SERVER_SIDE)]
    libraries = [m for m in loaded if m.partition(".")[0] in LIBRARIES]
    assert server == [], server
    assert libraries == [], libraries


def test_the_check_sees_a_server_module() -> None:
    loaded = _loaded_by("sidecar.store")
    assert "sidecar.store" in loaded and "sqlalchemy" in loaded
