"""The engine's domain types: what a caller asks for and what it is shown."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sidecar.store import Controls, Slot, WriteFailure
from sidecar.vocabulary import Mode, ReprocessBehavior, State

DEFAULT_MAX_ACTIVE_RUNS = 10


@dataclass(frozen=True)
class BackfillSpec:
    """A request to create a backfill."""

    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    run_backwards: bool = False
    reprocess_behavior: ReprocessBehavior = ReprocessBehavior.NONE
    max_active_runs: int = DEFAULT_MAX_ACTIVE_RUNS
    dag_run_conf: dict[str, Any] | None = None
    mode: Mode = Mode.WINDOWED
    triggering_user_name: str | None = None
    controls: Controls = field(default_factory=Controls)
    """Beyond Airflow: failed-runs limit, priority, DAG cap, concurrent backfills (docs/controls.md)."""


@dataclass(frozen=True)
class Progress:
    """Counts of a backfill's slots and runs."""

    planned: int = 0
    written: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class BackfillView:
    """A backfill as a caller sees it."""

    id: int
    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    dag_run_conf: dict[str, Any] | None
    reprocess_behavior: ReprocessBehavior | None
    """None for a value this release does not know (a backfill Airflow made)."""
    max_active_runs: int
    run_backwards: bool
    mode: Mode
    is_paused: bool
    state: State
    progress: Progress
    triggering_user_name: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None
    write_failure: WriteFailure | None = None
    """Why writing its runs failed last (set aside, or retried next tick); None while all is well."""
    controls: Controls = field(default_factory=Controls)
    pause_reason: str | None = None
    """Why the sidecar paused it (its failed runs reached ``max_failed_runs``); None unless paused so."""


#: One slot of a plan as a caller sees it: exactly as the store reads it back.
SlotView = Slot


@dataclass(frozen=True)
class DryRun:
    """The answer of a dry run."""

    backfill: BackfillView
    runs: list[SlotView]
    truncated: bool
    planned_exact: bool = True
    """False when the planning budget cut the count short: ``progress.planned`` is a lower bound."""
