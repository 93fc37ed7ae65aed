"""Protobuf messages to and from the engine's domain types."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Literal

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.engine import (
    BY_PARTITION_KEY,
    DEFAULT_MAX_ACTIVE_RUNS,
    MAX_CONF_DEPTH,
    BackfillSpec,
    BackfillView,
    Controls,
    Disposition,
    Estimate,
    Mode,
    PlanSummary,
    RecordedEvent,
    ReprocessBehavior,
    SlotView,
    State,
    TaskSelection,
    WebhookStatus,
    WriteFailure,
    shown_target,
)
from sidecar.errors import InvalidArgument
from sidecar.names import backfill_name, parse_backfill_name
from sidecar.vocabulary import counted

# One table per enum, vocabulary -> proto; requests are read through its inverse, with
# UNSPECIFIED meaning the default.
_MODES = {Mode.WINDOWED: pb.MODE_WINDOWED, Mode.EAGER: pb.MODE_EAGER}
_MODES_IN = {v: k for k, v in _MODES.items()} | {pb.MODE_UNSPECIFIED: Mode.WINDOWED}
_REPROCESS = {
    ReprocessBehavior.NONE: pb.REPROCESS_BEHAVIOR_NONE,
    ReprocessBehavior.FAILED: pb.REPROCESS_BEHAVIOR_FAILED,
    ReprocessBehavior.COMPLETED: pb.REPROCESS_BEHAVIOR_COMPLETED,
}
_REPROCESS_IN = {v: k for k, v in _REPROCESS.items()} | {
    pb.REPROCESS_BEHAVIOR_UNSPECIFIED: ReprocessBehavior.NONE
}
#: ``ordering`` -> ``run_backwards`` (UNSPECIFIED: ``run_backwards`` alone decides).
_ORDERINGS_IN = {
    pb.ORDERING_UNSPECIFIED: False,
    pb.ORDERING_OLDEST_FIRST: False,
    pb.ORDERING_NEWEST_FIRST: True,
}
_STATES = {
    State.ACTIVE: pb.Backfill.STATE_ACTIVE,
    State.PAUSED: pb.Backfill.STATE_PAUSED,
    State.COMPLETED: pb.Backfill.STATE_COMPLETED,
    State.CANCELLED: pb.Backfill.STATE_CANCELLED,
}
STATES_IN = {v: k for k, v in _STATES.items()}
_DISPOSITIONS = {
    Disposition.CREATE: pb.DISPOSITION_CREATE,
    Disposition.REPROCESS: pb.DISPOSITION_REPROCESS,
    Disposition.ALREADY_EXISTS: pb.DISPOSITION_ALREADY_EXISTS,
    Disposition.IN_FLIGHT: pb.DISPOSITION_IN_FLIGHT,
    Disposition.PENDING: pb.DISPOSITION_PENDING,
}


_WEBHOOK_FORMATS = {"json": pb.Webhook.FORMAT_JSON, "slack": pb.Webhook.FORMAT_SLACK}
_WEBHOOK_FORMATS_IN = {v: k for k, v in _WEBHOOK_FORMATS.items()} | {pb.Webhook.FORMAT_UNSPECIFIED: "json"}


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    """An aware datetime as a Timestamp."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def datetime_of(message: Message, name: str, field: str) -> dt.datetime:
    """The required Timestamp field ``name`` of ``message`` as an aware UTC datetime.

    Presence, not value, tells an unset field: 1970-01-01T00:00:00Z is a valid date.

    Raises:
        InvalidArgument: unset or out of range.
    """
    if not message.HasField(name):
        raise InvalidArgument(f"{field} is required", field=field)
    ts: Timestamp = getattr(message, name)
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"{field} is out of range: {exc}", field=field) from exc


#: The widest UTC offset a bound may carry (a Python ``timezone`` is less than a day).
_MAX_OFFSET_SECONDS = 24 * 3600 - 60


def bound_of(backfill: pb.Backfill, name: str) -> dt.datetime:
    """The range bound ``name`` as the caller wrote it: its instant, in its UTC offset.

    Raises:
        InvalidArgument: the bound is unset or out of range, or its offset is not a whole
            number of minutes within a day either way.
    """
    instant = datetime_of(backfill, name, f"backfill.{name}")
    field = f"backfill.{name}_utc_offset_seconds"
    seconds: int = getattr(backfill, f"{name}_utc_offset_seconds")
    if seconds % 60 or abs(seconds) > _MAX_OFFSET_SECONDS:
        raise InvalidArgument(
            f"{field} must be a whole number of minutes between -23:59 and +23:59, got {counted(seconds, 'second')}",
            field=field,
        )
    if seconds == 0:
        return instant
    try:
        return instant.astimezone(dt.timezone(dt.timedelta(seconds=seconds)))
    except OverflowError as exc:  # the first or last representable day, shifted past it
        raise InvalidArgument(f"backfill.{name} is out of range: {exc}", field=f"backfill.{name}") from exc


def utc_offset_of(value: dt.datetime) -> int:
    """The UTC offset of an aware datetime, in seconds (0 for UTC)."""
    offset = value.utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def parse_conf(text: str) -> dict[str, Any] | None:
    """``dag_run_conf`` JSON text as a dict (empty text: none given).

    Only what every database's JSON column can store is accepted: no NaN or Infinity (nor a
    number that overflows a double), and no more than :data:`MAX_CONF_DEPTH` levels of nesting.

    Raises:
        InvalidArgument: not JSON, not a JSON object, a non-finite number, or too deep.
    """
    if not text.strip():
        return None
    try:
        value = json.loads(text, parse_constant=_non_finite, parse_float=_finite_float)
    except RecursionError as exc:
        raise _conf_too_deep() from exc
    except ValueError as exc:
        raise InvalidArgument(
            f"dag_run_conf is not valid JSON: {exc}", field="backfill.dag_run_conf"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidArgument("dag_run_conf must be a JSON object", field="backfill.dag_run_conf")
    if _too_deep(value):
        raise _conf_too_deep()
    return value


def _non_finite(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259): Airflow's JSON columns cannot hold them."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of the range of a double")
    return value


def _too_deep(value: Any, level: int = 1) -> bool:
    """Whether ``value`` nests objects and arrays deeper than :data:`MAX_CONF_DEPTH` (bounded recursion)."""
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if children is None:
        return False
    return level > MAX_CONF_DEPTH or any(_too_deep(child, level + 1) for child in children)


def _conf_too_deep() -> InvalidArgument:
    return InvalidArgument(
        f"dag_run_conf nests deeper than {MAX_CONF_DEPTH} levels", field="backfill.dag_run_conf"
    )


def spec_of(request: pb.CreateBackfillRequest, principal: str | None) -> BackfillSpec:
    """A CreateBackfill request as a spec (the engine checks its fields' bounds).

    Raises:
        InvalidArgument: naming the field that cannot be converted.
    """
    b = request.backfill
    if not request.HasField("backfill"):
        raise InvalidArgument("backfill is required", field="backfill")
    if b.mode not in _MODES_IN:
        raise InvalidArgument(f"unknown mode {b.mode}", field="backfill.mode")
    if b.reprocess_behavior not in _REPROCESS_IN:
        raise InvalidArgument(
            f"unknown reprocess_behavior {b.reprocess_behavior}", field="backfill.reprocess_behavior"
        )
    webhook_url: str | None = None
    webhook_format = "json"
    if b.HasField("webhook"):
        if b.webhook.format not in _WEBHOOK_FORMATS_IN:
            raise InvalidArgument(
                f"unknown webhook format {b.webhook.format}", field="backfill.webhook.format"
            )
        webhook_url, webhook_format = b.webhook.url, _WEBHOOK_FORMATS_IN[b.webhook.format]
    return BackfillSpec(
        dag_id=b.dag_id,
        from_date=_bound_of(b, "from"),
        to_date=_bound_of(b, "to"),
        run_backwards=_reverse_of(b),
        reprocess_behavior=_REPROCESS_IN[b.reprocess_behavior],
        max_active_runs=b.max_active_runs if b.HasField("max_active_runs") else DEFAULT_MAX_ACTIVE_RUNS,
        dag_run_conf=parse_conf(b.dag_run_conf),
        mode=_MODES_IN[b.mode],
        triggering_user_name=principal,
        run_on_latest_version=b.run_on_latest_version if b.HasField("run_on_latest_version") else None,
        controls=Controls(
            max_failed_runs=b.max_failed_runs if b.HasField("max_failed_runs") else None,
            priority=b.priority,
            dag_max_active_runs=b.dag_max_active_runs if b.HasField("dag_max_active_runs") else None,
            concurrent=b.concurrent,
        ),
        webhook_url=webhook_url,
        webhook_format=webhook_format,
        task_selection=_selection_of(b.task_selection) if b.HasField("task_selection") else None,
        from_partition_key=b.from_partition_key or None,
        to_partition_key=b.to_partition_key or None,
    )


def _selection_of(message: pb.TaskSelection) -> TaskSelection:
    """A task subset (an empty ``task_regex`` is unset: proto3 cannot tell them apart)."""
    return TaskSelection(
        task_regex=message.task_regex or None,
        task_ids=tuple(message.task_ids),
        include_upstream=message.include_upstream,
        include_downstream=message.include_downstream,
    )


def _selection_message(view: BackfillView) -> pb.TaskSelection | None:
    selection = view.task_selection
    if selection is None:
        return None
    return pb.TaskSelection(
        task_regex=selection.task_regex or "",
        task_ids=list(selection.task_ids),
        include_upstream=selection.include_upstream,
        include_downstream=selection.include_downstream,
        selected_task_ids=list(view.selected_task_ids),
    )


def _bound_of(b: pb.Backfill, end: Literal["from", "to"]) -> dt.datetime:
    """``from_date`` (``to_date``), or :data:`BY_PARTITION_KEY` when only its partition key is given."""
    name: Literal["from_date", "to_date"] = "from_date" if end == "from" else "to_date"
    key = b.from_partition_key if end == "from" else b.to_partition_key
    if key and not b.HasField(name):
        return BY_PARTITION_KEY
    return bound_of(b, name)


def _reverse_of(b: pb.Backfill) -> bool:
    """``run_backwards``, or ``ordering`` (its other spelling) when that is set.

    Raises:
        InvalidArgument: an unknown ordering, or ``OLDEST_FIRST`` with ``run_backwards``.
    """
    if b.ordering not in _ORDERINGS_IN:
        raise InvalidArgument(f"unknown ordering {b.ordering}", field="backfill.ordering")
    if b.run_backwards and b.ordering == pb.ORDERING_OLDEST_FIRST:
        raise InvalidArgument(
            "ordering OLDEST_FIRST contradicts run_backwards: give one of them", field="backfill.ordering"
        )
    return b.run_backwards or _ORDERINGS_IN[b.ordering]


def backfill_message(view: BackfillView) -> pb.Backfill:
    """A backfill view as the API resource."""
    p = view.progress
    return pb.Backfill(
        name=backfill_name(view.id) if view.id else "",
        id=view.id,
        dag_id=view.dag_id,
        from_date=timestamp(view.from_date),
        to_date=timestamp(view.to_date),
        dag_run_conf=json.dumps(view.dag_run_conf) if view.dag_run_conf is not None else "",
        reprocess_behavior=(
            _REPROCESS[view.reprocess_behavior]
            if view.reprocess_behavior is not None
            else pb.REPROCESS_BEHAVIOR_UNSPECIFIED
        ),
        max_active_runs=view.max_active_runs,
        run_backwards=view.run_backwards,
        ordering=pb.ORDERING_NEWEST_FIRST if view.run_backwards else pb.ORDERING_OLDEST_FIRST,
        mode=_MODES[view.mode],
        is_paused=view.is_paused,
        state=_STATES[view.state],
        progress=pb.Progress(
            planned=p.planned,
            written=p.written,
            queued=p.queued,
            running=p.running,
            succeeded=p.succeeded,
            failed=p.failed,
            skipped=p.skipped,
            planned_is_counting=p.planned_is_counting,
        ),
        triggering_user_name=view.triggering_user_name or "",
        create_time=timestamp(view.created_at),
        update_time=timestamp(view.updated_at),
        complete_time=timestamp(view.completed_at),
        write_failure=_write_failure(view.write_failure),
        run_on_latest_version=view.run_on_latest_version,
        bundle_version=view.bundle_version or "",
        task_selection=_selection_message(view),
        max_failed_runs=view.controls.max_failed_runs,
        priority=view.controls.priority,
        pause_reason=view.pause_reason or "",
        dag_max_active_runs=view.controls.dag_max_active_runs,
        concurrent=view.controls.concurrent,
        from_date_utc_offset_seconds=utc_offset_of(view.from_date),
        to_date_utc_offset_seconds=utc_offset_of(view.to_date),
        estimate=_estimate(view.estimate),
        webhook=_webhook(view.webhook),
    )


def _webhook(status: WebhookStatus | None) -> pb.Webhook | None:
    if status is None:
        return None
    return pb.Webhook(
        format=_WEBHOOK_FORMATS[status.format],
        target=shown_target(status.url),
        undelivered=status.undelivered,
        given_up=status.given_up,
        last_error=status.last_error or "",
    )


def event_message(event: RecordedEvent) -> pb.BackfillEvent:
    """A backfill event as the API message."""
    return pb.BackfillEvent(id=event.id, kind=event.kind, time=timestamp(event.occurred_at))


def _duration(value: dt.timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(value)
    return duration


def _estimate(estimate: Estimate | None) -> pb.Estimate | None:
    if estimate is None:
        return None
    return pb.Estimate(
        basis=estimate.basis,
        sample_size=estimate.sample_size,
        run_duration_p50=_duration(estimate.run_p50),
        run_duration_p90=_duration(estimate.run_p90),
        runs_remaining=estimate.runs_remaining or 0,
        # Unset while the plan is counted: no time left is made up from a partial count.
        remaining_p50=_duration(estimate.remaining_p50) if estimate.remaining_p50 is not None else None,
        remaining_p90=_duration(estimate.remaining_p90) if estimate.remaining_p90 is not None else None,
        plan_is_counting=estimate.runs_remaining is None,
    )


def summary_message(summary: PlanSummary | None) -> pb.PlanSummary | None:
    """A dry run's summary as the API message."""
    if summary is None:
        return None
    return pb.PlanSummary(
        create=summary.create,
        reprocess=summary.reprocess,
        already_exists=summary.already_exists,
        in_flight=summary.in_flight,
        exact=summary.exact,
        first_run=slot_message(summary.first_run) if summary.first_run else None,
        last_run=slot_message(summary.last_run) if summary.last_run else None,
    )


def _write_failure(failure: WriteFailure | None) -> pb.WriteFailure | None:
    if failure is None:
        return None
    return pb.WriteFailure(
        reason=failure.reason,
        message=failure.message,
        attempts=failure.attempts,
        set_aside=failure.set_aside,
        time=timestamp(failure.failed_at),
    )


def slot_message(slot: SlotView) -> pb.BackfillRun:
    """A slot as the API message."""
    return pb.BackfillRun(
        sort_ordinal=slot.sort_ordinal,
        logical_date=timestamp(slot.logical_date),
        data_interval_start=timestamp(slot.data_interval_start),
        data_interval_end=timestamp(slot.data_interval_end),
        run_after=timestamp(slot.run_after),
        run_id=slot.run_id,
        disposition=_DISPOSITIONS[slot.disposition]
        if slot.disposition is not None
        else pb.DISPOSITION_UNSPECIFIED,
        dag_run_id=slot.dag_run_id or 0,
        state=slot.state or "",
        partition_key=slot.partition_key or "",
        partition_date=timestamp(slot.partition_date),
    )


def backfill_id_of(name: str, field: str = "name") -> int:
    """The id in a ``backfills/{id}`` resource name.

    Raises:
        InvalidArgument: not of that form.
    """
    backfill_id = parse_backfill_name(name)
    if backfill_id is None:
        raise InvalidArgument(f"{field} must look like backfills/<id>, got {name[:80]!r}", field=field)
    return backfill_id


def ascending_of(order_by: str) -> bool:
    """Whether a ListBackfills ``order_by`` asks for the oldest first (``id``, ``id asc``).

    Raises:
        InvalidArgument: any other ordering than ``id`` ascending or descending.
    """
    words = order_by.split()
    if not words or words == ["id", "desc"]:
        return False
    if words in (["id"], ["id", "asc"]):
        return True
    raise InvalidArgument(f"cannot order by {order_by!r}: use 'id' or 'id desc'", field="order_by")


def page_size_of(value: int, default: int, maximum: int) -> int:
    """A page size clamped to ``[1, maximum]``; 0 means the default.

    Raises:
        InvalidArgument: a negative size.
    """
    if value < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(value or default, maximum)
