"""The engine: validating, planning, materialising and steering backfills (orchestration; the store runs the SQL)."""

from sidecar.engine._config import EngineConfig
from sidecar.engine._engine import BackfillEngine
from sidecar.engine._model import (
    DEFAULT_MAX_ACTIVE_RUNS,
    BackfillSpec,
    BackfillView,
    Disposition,
    DryRun,
    Mode,
    Phase,
    Progress,
    ReprocessBehavior,
    SlotView,
    State,
)
from sidecar.engine._tick import TickResult

__all__ = [
    "DEFAULT_MAX_ACTIVE_RUNS",
    "BackfillEngine",
    "BackfillSpec",
    "BackfillView",
    "Disposition",
    "DryRun",
    "EngineConfig",
    "Mode",
    "Phase",
    "Progress",
    "ReprocessBehavior",
    "SlotView",
    "State",
    "TickResult",
]
