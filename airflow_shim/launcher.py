"""``airflow-sidecar scheduler [ARGS…]``: ``airflow scheduler`` with the shim's runner."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Sequence

#: The Airflow minors whose scheduler the shim is proved with (tests/e2e, per minor:
#: docs/support-matrix.md).
SHIM_MINORS = ("3.1", "3.2", "3.3")


def unsupported_airflow() -> str | None:
    """One line saying why the installed Airflow cannot run the shim, or None when it can."""
    try:
        version = importlib.metadata.version("apache-airflow")
    except importlib.metadata.PackageNotFoundError:
        return "airflow-sidecar scheduler: apache-airflow is not installed (pip install 'airflow-backfill-sidecar[shim]')"
    if ".".join(version.split(".")[:2]) not in SHIM_MINORS:
        return (
            f"airflow-sidecar scheduler: Airflow {version} is not supported by the shim "
            f"(supported: Airflow {', '.join(m + '.x' for m in SHIM_MINORS)})"
        )
    return None


def run_scheduler(argv: Sequence[str]) -> int:
    """Start Airflow's own scheduler command with :class:`SidecarSchedulerJobRunner`.

    The CLI builds ``SchedulerJobRunner`` by its module-level name, so replacing that
    name keeps Airflow's daemon, logging, health-check and serve-logs behaviour intact.
    An Airflow the shim is not proved with is refused first, in one line (exit code 2).
    """
    refusal = unsupported_airflow()
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    from airflow.__main__ import main as airflow_main
    from airflow.cli.commands import scheduler_command

    from airflow_shim.runner import SidecarSchedulerJobRunner

    setattr(scheduler_command, "SchedulerJobRunner", SidecarSchedulerJobRunner)  # noqa: B010
    sys.argv = ["airflow", "scheduler", *argv]
    airflow_main()  # type: ignore[no-untyped-call]
    return 0
