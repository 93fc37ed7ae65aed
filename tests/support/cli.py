"""The sidecar's CLI as the end-to-end tests run it: ``python -m sidecar backfill --target T ...``.

One place builds the common arguments (the interpreter, ``backfill --target``, ``create
--dag-id D --from-date F --to-date L``, ``--watch``, ``--output json``) and the process
environment (:func:`tests.support.airflow.run_module`), so a test names only what it is about.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from tests.support.airflow import run_module

#: ``python -m sidecar`` of this interpreter (the venv under test).
SIDECAR = (sys.executable, "-m", "sidecar")


def sidecar_backfill(
    env: Mapping[str, str], target: str, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``airflow-sidecar backfill --target TARGET ARGS`` with ``env``; its output captured, never raising."""
    return run_module("sidecar", env, "backfill", "--target", target, *args, timeout=timeout)


def create_backfill(
    env: Mapping[str, str],
    target: str,
    dag_id: str,
    first: str,
    last: str,
    *options: str,
    partition_keys: bool = False,
    watch: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``backfill create --dag-id DAG_ID`` over ``first`` to ``last``, then ``options``, as JSON.

    Args:
        first, last: the range's dates (``--from-date``/``--to-date``), or with
            ``partition_keys`` its keys (``--from-partition-key``/``--to-partition-key``).
        watch: add ``--watch``: return once the backfill ended (one JSON line per change).
        timeout: seconds the command may take (default: 300 with ``watch``, else 120).
    """
    bounds = (
        ("--from-partition-key", "--to-partition-key") if partition_keys else ("--from-date", "--to-date")
    )
    return sidecar_backfill(
        env,
        target,
        "create",
        "--dag-id",
        dag_id,
        bounds[0],
        first,
        bounds[1],
        last,
        *options,
        *(("--watch",) if watch else ()),
        "--output",
        "json",
        timeout=timeout if timeout is not None else 300.0 if watch else 120.0,
    )
