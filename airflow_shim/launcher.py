"""``airflow-sidecar scheduler [ARGS…]``: ``airflow scheduler`` with the shim's runner."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def run_scheduler(argv: Sequence[str]) -> int:
    """Start Airflow's own scheduler command with :class:`SidecarSchedulerJobRunner`.

    The CLI builds ``SchedulerJobRunner`` by its module-level name, so replacing that
    name keeps Airflow's daemon, logging, health-check and serve-logs behaviour intact.
    """
    from airflow.__main__ import main as airflow_main
    from airflow.cli.commands import scheduler_command

    from airflow_shim.runner import SidecarSchedulerJobRunner

    setattr(scheduler_command, "SchedulerJobRunner", SidecarSchedulerJobRunner)  # noqa: B010
    sys.argv = ["airflow", "scheduler", *argv]
    airflow_main()  # type: ignore[no-untyped-call]
    return 0
