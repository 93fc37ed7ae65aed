"""Validating a request against its DAG the way Airflow does, and rebuilding a stored backfill's plan."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from sidecar.catalog import validate_conf
from sidecar.engine._model import BackfillSpec
from sidecar.engine._requests import check_date
from sidecar.errors import (
    BackfillNotAllowed,
    DagNotFound,
    InvalidArgument,
    InvalidDirection,
    InvalidReprocess,
    NonPeriodicSchedule,
    NoRunsToCreate,
    SidecarError,
    UnsupportedFeature,
)
from sidecar.planning import (
    BackfillPlan,
    CronPartitionTimetable,
    DagRunInfo,
    PlannedRun,
    Timetable,
    parse_timetable,
    validate_range,
)
from sidecar.store import LoadedDag
from sidecar.vocabulary import ReprocessBehavior

#: The serialized type of ``schedule=None``, which Airflow 3.1 and 3.2 refuse as "no schedule".
_NULL_TIMETABLE = "airflow.timetables.simple.NullTimetable"
#: The serialized type of Airflow's partitioned timetable.
_PARTITION_TIMETABLE = "airflow.timetables.trigger.CronPartitionTimetable"


def check_dag(spec: BackfillSpec, loaded: LoadedDag | None) -> LoadedDag:
    """Airflow's first checks, in its order: the DAG exists and allows backfill runs.

    On Airflow 3.1 and 3.2 (their :class:`~sidecar.store.Refusals`) a DAG without a schedule
    is refused here too, with their words; 3.3 refuses every non-periodic schedule when the
    plan is built.

    Raises:
        DagNotFound, BackfillNotAllowed, NonPeriodicSchedule.
    """
    if loaded is None:
        raise DagNotFound(f"Could not find dag {spec.dag_id}", field="backfill.dag_id")
    allowed = loaded.allowed_run_types
    if allowed is not None and "backfill" not in allowed:
        raise BackfillNotAllowed(
            f"Dag with dag_id: '{spec.dag_id}' does not allow backfill runs", field="backfill.dag_id"
        )
    no_schedule = loaded.airflow.refusals.no_schedule
    timetable_type = loaded.template.timetable.get("__type")
    if no_schedule and timetable_type == _NULL_TIMETABLE:
        raise NonPeriodicSchedule(no_schedule.format(dag_id=spec.dag_id), field="backfill.dag_id")
    partitions_not_yet = loaded.airflow.partitions_not_yet
    if partitions_not_yet and timetable_type == _PARTITION_TIMETABLE:
        raise UnsupportedFeature(partitions_not_yet, field="backfill.dag_id")
    return loaded


def resolve_partition_keys(spec: BackfillSpec, loaded: LoadedDag) -> BackfillSpec:
    """``spec`` with the bounds it gives as partition keys replaced by their dates.

    A key must name exactly one partition of the DAG's partitioned timetable; its date is
    the key's wall clock, which Airflow reads in the timetable's zone (so the backfill row
    holds what Airflow would store for the same range given as dates).

    Raises:
        InvalidArgument: a key given for a DAG that is not partitioned, or naming no partition.
        NonPeriodicSchedule, UnsupportedFeature: the DAG's timetable (as a plan would).
    """
    if spec.from_partition_key is None and spec.to_partition_key is None:
        return spec
    timetable = _timetable(loaded.template.timetable, spec.dag_id)
    if not isinstance(timetable, CronPartitionTimetable):
        field = "from_partition_key" if spec.from_partition_key is not None else "to_partition_key"
        raise InvalidArgument(
            f"DAG {spec.dag_id} is not partitioned: give the range as dates, not {field}",
            field=f"backfill.{field}",
        )
    from_date, to_date = spec.from_date, spec.to_date
    if spec.from_partition_key is not None:
        from_date = timetable.bound_of_key(spec.from_partition_key, field="backfill.from_partition_key")
        check_date(from_date, "the date of from_partition_key", "backfill.from_partition_key")
    if spec.to_partition_key is not None:
        to_date = timetable.bound_of_key(spec.to_partition_key, field="backfill.to_partition_key")
        check_date(to_date, "the date of to_partition_key", "backfill.to_partition_key")
    return replace(spec, from_date=from_date, to_date=to_date)


def _timetable(encoded: Any, dag_id: str) -> Timetable:
    try:
        return parse_timetable(encoded, dag_id=dag_id)
    except SidecarError as exc:  # NonPeriodicSchedule, UnsupportedFeature: the DAG is at fault
        raise _in_request(exc, "dag_id") from None


def check_params(spec: BackfillSpec, loaded: LoadedDag, now: dt.datetime) -> None:
    """Airflow's ``_validate_backfill_params``: range, future, depends_on_past, conf.

    In the order and words of the database's Airflow (``loaded.airflow.refusals``): 3.3 checks
    the range first; 3.1 and 3.2 check future dates after ``depends_on_past`` and refuse a
    from-after-to range, which they do not check, as the empty range it is, after the conf
    (3.1: before it, since its ``create_dagrun`` checks the conf as it creates the first run).

    Raises:
        InvalidDateRange, FutureDateRange, InvalidDirection, InvalidReprocess, InvalidConf.
        NoRunsToCreate: (3.1 and 3.2) the range is empty.
    """
    refusals = loaded.airflow.refusals
    if refusals.range_checked_first:
        _check_range(spec, now)
    if loaded.template.has_depends_on_past:
        if spec.run_backwards:
            raise InvalidDirection(refusals.reverse_depends_on_past, field="backfill.run_backwards")
        if spec.reprocess_behavior is ReprocessBehavior.NONE:
            raise InvalidReprocess(refusals.reprocess_depends_on_past, field="backfill.reprocess_behavior")
    if not refusals.range_checked_first and spec.from_date <= spec.to_date:
        _check_range(spec, now)  # only the future dates: the range is in order
    if refusals.conf_before_runs:
        validate_conf(loaded.template, spec.dag_run_conf, loaded.airflow.conf_rules)
    if not refusals.range_checked_first:
        plan = build_plan(
            loaded.template.timetable, spec.dag_id, spec.from_date, spec.to_date, spec.run_backwards, now
        )
        if next(iter(plan.runs()), None) is None:
            raise NoRunsToCreate(
                refusals.no_runs.format(dag_id=spec.dag_id, from_date=spec.from_date, to_date=spec.to_date),
                field="backfill.from_date",
            )
    if not refusals.conf_before_runs:  # 3.1: create_dagrun checks it, at the first run
        validate_conf(loaded.template, spec.dag_run_conf, loaded.airflow.conf_rules)


def _check_range(spec: BackfillSpec, now: dt.datetime) -> None:
    try:
        validate_range(spec.from_date, spec.to_date, now)
    except SidecarError as exc:
        raise _in_request(exc, "from_date") from None


def _in_request(exc: SidecarError, default_field: str) -> SidecarError:
    """``exc`` with its field as a path in ``CreateBackfillRequest`` (``backfill.<field>``).

    The planning layer names bare fields (it knows no request); the API reports field
    violations as paths from the request, like every other check here.
    """
    field = exc.field or default_field
    exc.field = field if field.startswith("backfill.") else f"backfill.{field}"
    return exc


def build_plan(
    timetable_encoded: Any,
    dag_id: str,
    spec_from: dt.datetime,
    spec_to: dt.datetime,
    reverse: bool,
    cutoff: dt.datetime,
) -> BackfillPlan:
    """The plan of a backfill from its stored parameters (stable even if the DAG's schedule changes)."""
    timetable = _timetable(timetable_encoded, dag_id)
    return BackfillPlan(
        timetable=timetable,
        from_date=spec_from,
        to_date=spec_to,
        reverse=reverse,
        cutoff=cutoff,
    )


def cursor_of(run: PlannedRun) -> dict[str, Any]:
    """A planned run as stored in ``sidecar_backfill.cursor``."""
    info = run.info
    return {
        "sort_ordinal": run.sort_ordinal,
        "run_id": run.run_id,
        "logical_date": info.logical_date.isoformat(),
        "data_interval_start": info.data_interval_start.isoformat(),
        "data_interval_end": info.data_interval_end.isoformat(),
        "run_after": info.run_after.isoformat(),
        "partition_key": info.partition_key,
        "partition_date": None if info.partition_date is None else info.partition_date.isoformat(),
    }


def run_of(cursor: dict[str, Any] | None) -> PlannedRun | None:
    """The inverse of :func:`cursor_of`."""
    if not cursor:
        return None
    parse = dt.datetime.fromisoformat
    return PlannedRun(
        sort_ordinal=int(cursor["sort_ordinal"]),
        info=DagRunInfo(
            logical_date=parse(cursor["logical_date"]),
            data_interval_start=parse(cursor["data_interval_start"]),
            data_interval_end=parse(cursor["data_interval_end"]),
            run_after=parse(cursor["run_after"]),
            partition_key=cursor.get("partition_key"),
            partition_date=parse(cursor["partition_date"]) if cursor.get("partition_date") else None,
        ),
        run_id=str(cursor["run_id"]),
    )
