"""Every check of a create request's shape, in one place: what needs neither the DAG nor the database.

The API converter only converts (it refuses what cannot be converted: unknown enum
numbers, unset or out-of-range timestamps, conf that is not a JSON object); the checks
against the DAG and Airflow's rules follow in :mod:`sidecar.engine._plans`.
"""

from __future__ import annotations

from sidecar.engine._model import BackfillSpec
from sidecar.errors import InvalidArgument

__all__ = ["MAX_ACTIVE_RUNS_LIMIT", "MAX_DAG_ID_LENGTH", "MAX_REQUEST_ID_LENGTH", "check_request"]

#: Upper bound of ``max_active_runs`` (well beyond what a scheduler can run at once).
MAX_ACTIVE_RUNS_LIMIT = 10_000
#: Airflow's ``dag.dag_id`` column width.
MAX_DAG_ID_LENGTH = 250
#: ``sidecar_backfill.request_id``'s width.
MAX_REQUEST_ID_LENGTH = 128


def check_request(spec: BackfillSpec, request_id: str | None, dry_run_limit: int | None) -> None:
    """Field presence and bounds of a create request, each refusal naming its field path.

    Raises:
        InvalidArgument: naming the field.
    """
    if len(spec.dag_id) > MAX_DAG_ID_LENGTH:
        raise InvalidArgument(
            f"dag_id is longer than {MAX_DAG_ID_LENGTH} characters", field="backfill.dag_id"
        )
    if request_id is not None and len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(
            f"request_id is longer than {MAX_REQUEST_ID_LENGTH} characters", field="request_id"
        )
    if dry_run_limit is not None and dry_run_limit < 0:
        raise InvalidArgument("dry_run_page_size must not be negative", field="dry_run_page_size")
    if not spec.dag_id:
        raise InvalidArgument("dag_id is required", field="backfill.dag_id")
    for name in ("from_date", "to_date"):
        value = getattr(spec, name)
        if value.tzinfo is None:
            raise InvalidArgument(f"{name} must carry a time zone", field=f"backfill.{name}")
    if not 1 <= spec.max_active_runs <= MAX_ACTIVE_RUNS_LIMIT:
        raise InvalidArgument(
            f"max_active_runs must be between 1 and {MAX_ACTIVE_RUNS_LIMIT}, got {spec.max_active_runs}",
            field="backfill.max_active_runs",
        )
