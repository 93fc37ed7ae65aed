"""The engine's domain types: what a caller asks for and what it is shown."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, TypedDict

from sidecar.catalog import TaskSelection
from sidecar.store import Controls, Slot, WebhookStatus, WriteFailure
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
    run_on_latest_version: bool | None = None
    """Whether reprocessed runs move to the backfill's DAG version; None: resolved as Airflow does."""
    task_selection: TaskSelection | None = None
    """Run only these tasks (None: all of them)."""
    controls: Controls = field(default_factory=Controls)
    """Beyond Airflow: failed-runs limit, priority, DAG cap, concurrent backfills (docs/controls.md)."""
    webhook_url: str | None = None
    """Where its events are POSTed (checked by ``_webhook_urls``); None: Watch only."""
    webhook_format: str = "json"
    """``json`` or ``slack``."""
    from_partition_key: str | None = None
    to_partition_key: str | None = None


class SpecFields(TypedDict):
    """What a create copies from its spec, as stored (``NewBackfill``) and as a dry run shows it (``BackfillView``)."""

    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    dag_run_conf: dict[str, Any] | None
    reprocess_behavior: ReprocessBehavior
    max_active_runs: int
    run_backwards: bool
    mode: Mode
    triggering_user_name: str | None
    task_selection: TaskSelection | None
    controls: Controls


def spec_fields(spec: BackfillSpec) -> SpecFields:
    """The fields ``NewBackfill`` and ``BackfillView`` take from ``spec`` unchanged: one list, kept here.

    A new field of the spec that both hold goes here once; the create's insert and the dry run's
    view both unpack it (``NewBackfill(**spec_fields(spec), ...)``), and mypy checks each key.
    """
    return SpecFields(
        dag_id=spec.dag_id,
        from_date=spec.from_date,
        to_date=spec.to_date,
        dag_run_conf=spec.dag_run_conf,
        reprocess_behavior=spec.reprocess_behavior,
        max_active_runs=spec.max_active_runs,
        run_backwards=spec.run_backwards,
        mode=spec.mode,
        triggering_user_name=spec.triggering_user_name,
        task_selection=spec.task_selection,
        controls=spec.controls,
    )


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
    planned_is_counting: bool = False
    """The plan is still being counted in the background: ``planned`` is the slots written so far."""


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
    run_on_latest_version: bool | None = None
    """As resolved at creation; None for a backfill Airflow made (or one made before pinning)."""
    bundle_version: str | None = None
    """The bundle version its runs are pinned to; None when unversioned or not the sidecar's."""
    task_selection: TaskSelection | None = None
    """The task subset asked for (None: every task)."""
    selected_task_ids: tuple[str, ...] = ()
    """The tasks the subset resolved to when the backfill was created (empty without a subset)."""
    controls: Controls = field(default_factory=Controls)
    pause_reason: str | None = None
    """Why the sidecar paused it (its failed runs reached ``max_failed_runs``); None unless paused so."""
    estimate: Estimate | None = None
    """How long its unfinished runs should take (see ``_estimates``); None when not asked or no history."""
    webhook: WebhookStatus | None = None
    """Its webhook and how deliveries went (``get`` only); None without one."""


@dataclass(frozen=True)
class Estimate:
    """How long a backfill's runs still to finish should take, from finished runs' durations."""

    basis: str
    """``history`` (the DAG's latest finished runs) or ``backfill`` (the backfill's own)."""
    sample_size: int
    run_p50: dt.timedelta
    run_p90: dt.timedelta
    runs_remaining: int | None
    """None while the plan is still being counted: the runs left are not known yet."""
    remaining_p50: dt.timedelta | None
    """None with ``runs_remaining``: no time left is computed from a partial count."""
    remaining_p90: dt.timedelta | None


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
    summary: PlanSummary | None = None
    """The whole plan counted by disposition."""


@dataclass(frozen=True)
class PlanSummary:
    """A dry run's whole plan counted by what would happen to each slot."""

    create: int
    reprocess: int
    already_exists: int
    in_flight: int
    exact: bool
    """False when the counts are lower bounds (planning budget, limit on runs, too many runs read)."""
    first_run: SlotView | None
    last_run: SlotView | None

    @property
    def to_run(self) -> int:
        """Slots that would run: created or reprocessed."""
        return self.create + self.reprocess

    @property
    def skipped(self) -> int:
        """Slots that would be skipped: a run exists and is kept, or is in flight."""
        return self.already_exists + self.in_flight
