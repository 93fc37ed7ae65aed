"""The engine: validating, planning, materialising and steering backfills."""

from sidecar.engine._engine import BackfillEngine, EngineConfig, TickResult
from sidecar.engine._model import (
    DEFAULT_MAX_ACTIVE_RUNS,
    BackfillSpec,
    BackfillView,
    DryRun,
    Mode,
    Phase,
    Progress,
    ReprocessBehavior,
    SlotView,
    State,
)

__all__ = [
    "DEFAULT_MAX_ACTIVE_RUNS",
    "BackfillEngine",
    "BackfillSpec",
    "BackfillView",
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
