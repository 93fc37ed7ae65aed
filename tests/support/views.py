"""``backfill_view``: an engine ``BackfillView`` for contract tests, every field but those a test sets at a default."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sidecar.engine import BackfillView, Mode, Progress, ReprocessBehavior, State

#: The default bounds and timestamps of a view.
DAY = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def backfill_view(**fields: Any) -> BackfillView:
    """An active, windowed backfill ``7`` of DAG ``d`` on :data:`DAY`; ``fields`` override any field."""
    defaults: dict[str, Any] = {
        "id": 7,
        "dag_id": "d",
        "from_date": DAY,
        "to_date": DAY,
        "dag_run_conf": None,
        "reprocess_behavior": ReprocessBehavior.NONE,
        "max_active_runs": 2,
        "run_backwards": False,
        "mode": Mode.WINDOWED,
        "is_paused": False,
        "state": State.ACTIVE,
        "progress": Progress(),
        "triggering_user_name": None,
        "created_at": DAY,
        "updated_at": DAY,
        "completed_at": None,
    }
    return BackfillView(**(defaults | fields))
