"""What the shim tells the sidecar about the scheduler's cluster policies.

Runs inside the scheduler (it imports Airflow; the sidecar never does).
"""

from __future__ import annotations

import sys
from typing import Any


def mutation_hook_name(hook: Any = None) -> str:
    """The dotted name of a non-default ``task_instance_mutation_hook``, or '' for Airflow's no-op.

    Airflow marks its default policy functions with ``is_noop`` (``verify_integrity`` reads
    the same flag to choose its bulk-insert path), so any hook without it, set in
    ``airflow_local_settings`` or by a pluggy policy plugin, is reported.

    Args:
        hook: the hook to describe; ``airflow.settings.task_instance_mutation_hook`` when None.
            Outside a process that has loaded Airflow's settings (the scheduler always has,
            before the shim starts) there is no hook to report, and importing Airflow just
            to look would configure it: '' is returned.
    """
    if hook is None:
        settings = sys.modules.get("airflow.settings")
        if settings is None:
            return ""
        hook = settings.task_instance_mutation_hook
    if getattr(hook, "is_noop", False):
        return ""
    module = getattr(hook, "__module__", None) or "?"
    name = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    return f"{module}.{name}"
