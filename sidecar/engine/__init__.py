"""The engine: validating, planning, materialising and steering backfills (orchestration; the store runs the SQL)."""

from sidecar.catalog import TaskSelection
from sidecar.engine._config import EngineConfig
from sidecar.engine._engine import BackfillEngine
from sidecar.engine._model import (
    BY_PARTITION_KEY,
    DEFAULT_MAX_ACTIVE_RUNS,
    BackfillSpec,
    BackfillView,
    DryRun,
    Estimate,
    PlanSummary,
    Progress,
    SlotView,
)
from sidecar.engine._requests import MAX_CONF_DEPTH
from sidecar.engine._tick import TickResult
from sidecar.engine._warm_up import settle_heap
from sidecar.engine._webhook_urls import shown_target
from sidecar.store import Controls, Phase, RecordedEvent, WebhookStatus, WriteFailure
from sidecar.vocabulary import Disposition, Mode, ReprocessBehavior, State

__all__ = [
    "BY_PARTITION_KEY",
    "DEFAULT_MAX_ACTIVE_RUNS",
    "MAX_CONF_DEPTH",
    "BackfillEngine",
    "BackfillSpec",
    "BackfillView",
    "Controls",
    "Disposition",
    "DryRun",
    "EngineConfig",
    "Estimate",
    "Mode",
    "Phase",
    "PlanSummary",
    "Progress",
    "RecordedEvent",
    "ReprocessBehavior",
    "SlotView",
    "State",
    "TaskSelection",
    "TickResult",
    "WebhookStatus",
    "WriteFailure",
    "settle_heap",
    "shown_target",
]
