"""``airflow-sidecar scheduler [ARGS…]``: ``airflow scheduler`` with the shim's runner."""

from __future__ import annotations

from collections.abc import Sequence


def run_scheduler(argv: Sequence[str]) -> int:
    """Start Airflow's own scheduler command with :class:`SidecarSchedulerJobRunner`.

    The CLI builds ``SchedulerJobRunner`` by its module-level name, so replacing that
    name keeps Airflow's daemon, logging, health-check and serve-logs behaviour intact.
    """
    from airflow.__main__ import main as airflow_main
    from airflow.cli.commands import scheduler_command

    from airflow_shim.runner import SidecarSchedulerJobRunner

    scheduler_command.SchedulerJobRunner = SidecarSchedulerJobRunner  # type: ignore[misc]
    import sys

    sys.argv = ["airflow", "scheduler", *argv]
    airflow_main()
    return 0
