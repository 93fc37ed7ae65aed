"""Measurements that must start from a fresh interpreter: one case, one process.

A case measured after others in the same process inherits their threads, worker
processes and caches (issue 14: a DST-zone first run measured 2.6 s after earlier
repeats, 90-98 ms alone). :func:`in_fresh_process` runs ``python -m <module> --one
<json>`` and reads the JSON object the child prints last; the module's ``--one`` handler
calls :func:`answer`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench._common import ROOT


def in_fresh_process(module: str, case: dict[str, Any], *, timeout: float = 3600.0) -> dict[str, Any]:
    """Run ``case`` in a new ``python -m module --one`` process and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--one", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} --one {case} failed:\n{done.stderr[-3000:]}")
    answer_line = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(answer_line)
    return result


def answer(result: dict[str, Any]) -> None:
    """Print a child's result as the last line of its output (what :func:`in_fresh_process` reads)."""
    print(json.dumps(result), flush=True)
