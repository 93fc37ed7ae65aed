"""The engine: validating, planning, materialising and steering backfills (orchestration; the store runs the SQL)."""

from sidecar.engine._config import EngineConfig
from sidecar.engine._engine import BackfillEngine
from sidecar.engine._model import (
    BY_PARTITION_KEY,
    DEFAULT_MAX_ACTIVE_RUNS,
    BackfillSpec,
    BackfillView,
    DryRun,
    Progress,
    SlotView,
)
from sidecar.engine._requests import MAX_CONF_DEPTH
from sidecar.engine._tick import TickResult
from sidecar.store import Phase, WriteFailure
from sidecar.vocabulary import Disposition, Mode, ReprocessBehavior, State

__all__ = [
    "BY_PARTITION_KEY",
    "DEFAULT_MAX_ACTIVE_RUNS",
    "MAX_CONF_DEPTH",
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
    "WriteFailure",
]
