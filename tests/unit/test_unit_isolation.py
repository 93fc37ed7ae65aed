"""The unit tests run without a database driver and without Airflow.

A child pytest runs ``tests/unit`` (this file excluded, so it does not recurse) with a
plugin that refuses to import psycopg2, asyncpg and Airflow, under ``CI=true`` so that a
test which needs them fails instead of skipping. Whatever needs PostgreSQL or Airflow
belongs in tests/integration, tests/parity, tests/resilience or tests/e2e; the shared
fixtures plugin (:mod:`tests.support.fixtures`) imports the driver only when one of its
fixtures runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("psycopg2", "asyncpg", "airflow")

_BLOCKER = textwrap.dedent(
    f'''
    """Refuse to import {", ".join(BLOCKED)} (and their submodules) in this process."""

    import importlib
    import importlib.abc
    import sys

    BLOCKED = {BLOCKED!r}
    refused = []


    class _Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                refused.append(name)
                raise ModuleNotFoundError(f"{{name}} is blocked: unit tests must not need it", name=name)
            return None


    already = [name for name in sys.modules if name.split(".")[0] in BLOCKED]
    if already:
        raise RuntimeError(f"imported before the blocker: {{already}}")
    sys.meta_path.insert(0, _Refuse())
    for _name in BLOCKED:
        try:
            importlib.import_module(_name)
        except ModuleNotFoundError:
            pass
        else:
            raise RuntimeError(f"the blocker let {{_name}} through")
    refused.clear()


    def pytest_terminal_summary(terminalreporter):
        names = ", ".join(sorted(set(refused))) or "none"
        terminalreporter.write_line(f"import blocker active; refused: {{names}}")
    '''
)


def test_unit_tests_pass_without_database_drivers_or_airflow(tmp_path: Path) -> None:
    (tmp_path / "block_db_stack.py").write_text(_BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path), str(PROJECT_ROOT), env.get("PYTHONPATH")])
    )
    env["CI"] = "true"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/unit",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "block_db_stack",
            "--ignore",
            str(Path(__file__).relative_to(PROJECT_ROOT)),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "import blocker active" in output, output[-3000:]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) > 0, summary
    assert not re.search(r"skipped|xfail|error", summary), summary
