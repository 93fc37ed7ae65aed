"""What a backfill's runs are pinned to: the DAG version, bundle version and ``run_on_latest_version``.

Airflow's ``_create_backfill`` writes every run of a backfill in one transaction, on the
DAG version that is the latest then and with the DAG's ``bundle_version`` then; the sidecar,
which may write a windowed backfill's runs long after, records both at creation and writes
every batch with them (:func:`sidecar.engine._materialize.load_pinned`).
``run_on_latest_version`` only changes how reprocessed runs are cleared; it is resolved as
Airflow's API and CLI resolve it (3.3: request, DAG, ``[core]``, then True; older: request,
then True).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sidecar.engine._model import BackfillSpec
from sidecar.store import LoadedDag

__all__ = ["Pin", "pin_of", "resolve_run_on_latest_version"]


@dataclass(frozen=True)
class Pin:
    """What every run of one backfill is written with, fixed when it is created."""

    dag_version_id: uuid.UUID
    bundle_version: str | None
    run_on_latest_version: bool


def resolve_run_on_latest_version(requested: bool | None, loaded: LoadedDag, configured: bool | None) -> bool:
    """Airflow's ``resolve_run_on_latest_version(..., fallback=True)`` for a backfill.

    Args:
        requested: the request's value (None: not given).
        loaded: the DAG (its ``rerun_with_latest_version``, and its Airflow's rules).
        configured: ``[core] rerun_with_latest_version`` (None: unset).
    """
    if requested is not None:
        return requested
    if not loaded.airflow.resolves_run_on_latest_version:
        return True  # 3.1 and 3.2: the API body and the CLI default to True
    if loaded.template.rerun_with_latest_version is not None:
        return loaded.template.rerun_with_latest_version
    return True if configured is None else configured


def pin_of(spec: BackfillSpec, loaded: LoadedDag, configured: bool | None) -> Pin:
    """The pin of a backfill created now on ``loaded`` (the DAG's latest version)."""
    return Pin(
        dag_version_id=loaded.dag_version_id,
        bundle_version=loaded.bundle_version,
        run_on_latest_version=resolve_run_on_latest_version(spec.run_on_latest_version, loaded, configured),
    )
