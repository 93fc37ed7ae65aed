"""The engine's domain types: what a caller asks for and what it is shown."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sidecar.store import Slot, WriteFailure
from sidecar.vocabulary import Mode, ReprocessBehavior, State

DEFAULT_MAX_ACTIVE_RUNS = 10

#: The ``from_date``/``to_date`` of a spec whose bound is given as a partition key instead:
#: the engine replaces it with the key's date once it has the DAG's timetable.
BY_PARTITION_KEY = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class BackfillSpec:
    """A request to create a backfill.

    A bound may be given as a partition key (``from_partition_key``, ``to_partition_key``:
    partitioned DAGs only); its date is then :data:`BY_PARTITION_KEY` until the engine
    resolves it (``sidecar.engine._plans.resolve_partition_keys``).
    """

    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    run_backwards: bool = False
    reprocess_behavior: ReprocessBehavior = ReprocessBehavior.NONE
    max_active_runs: int = DEFAULT_MAX_ACTIVE_RUNS
    dag_run_conf: dict[str, Any] | None = None
    mode: Mode = Mode.WINDOWED
    triggering_user_name: str | None = None
    from_partition_key: str | None = None
    to_partition_key: str | None = None


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
