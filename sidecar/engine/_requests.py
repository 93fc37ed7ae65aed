"""Every check of what a request carries, in one place, before any row is written.

What needs neither the DAG nor the database: ids and filters (no control characters,
Airflow's column widths), numbers in range, dates in :data:`DATE_RANGE`, and a run
``conf`` that every supported database's JSON column stores as it was given (see
:func:`check_conf`). The API converter only converts (it refuses what cannot be
converted: unknown enum numbers, unset timestamps, text that is not a JSON object); the
checks against the DAG and Airflow's rules follow in :mod:`sidecar.engine._plans`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from sidecar.catalog import TaskSelection
from sidecar.engine._model import BY_PARTITION_KEY, BackfillSpec
from sidecar.errors import InvalidArgument, InvalidTaskSelection
from sidecar.store import Controls

__all__ = [
    "DATE_RANGE",
    "MAX_ACTIVE_RUNS_LIMIT",
    "MAX_CONF_BYTES",
    "MAX_CONF_DEPTH",
    "MAX_DAG_ID_LENGTH",
    "MAX_FAILED_RUNS_LIMIT",
    "MAX_REQUEST_ID_LENGTH",
    "MAX_SELECTED_TASK_IDS",
    "MAX_TASK_REGEX_LENGTH",
    "PRIORITY_LIMIT",
    "check_conf",
    "check_controls",
    "check_date",
    "check_list_filter",
    "check_request",
]

#: Upper bound of ``max_active_runs`` (well beyond what a scheduler can run at once).
MAX_ACTIVE_RUNS_LIMIT = 10_000
#: Upper bound of ``max_failed_runs`` (a backfill's runs are bounded by ``max_runs_per_backfill`` anyway).
MAX_FAILED_RUNS_LIMIT = 1_000_000
#: Priorities run from ``-PRIORITY_LIMIT`` to ``PRIORITY_LIMIT``.
PRIORITY_LIMIT = 1000
#: Airflow's ``dag.dag_id`` column width.
MAX_DAG_ID_LENGTH = 250
#: ``sidecar_backfill.request_id``'s width.
MAX_REQUEST_ID_LENGTH = 128
#: Longest ``task_selection.task_regex`` (its compile cost grows with its length).
MAX_TASK_REGEX_LENGTH = 1000
#: Most ``task_selection.task_ids`` in one request.
MAX_SELECTED_TASK_IDS = 10_000
#: Airflow's ``task_instance.task_id`` column width.
_MAX_TASK_ID_LENGTH = 250
#: ``dag_run.partition_key`` is a ``varchar(250)`` (Airflow's ID_LEN).
MAX_PARTITION_KEY_LENGTH = 250
#: Deepest nesting of objects and arrays in ``dag_run_conf`` (serialising a deeper
#: document again would overflow Python's recursion limit).
MAX_CONF_DEPTH = 64
#: Largest ``dag_run_conf``, as compact UTF-8 JSON: it is copied into every run's ``conf``.
MAX_CONF_BYTES = 64 * 1024
#: Integers in ``dag_run_conf`` are 64-bit signed (what JSON readers and ``jsonb``-to-bigint agree on).
_INT_RANGE = (-(2**63), 2**63 - 1)

#: The dates a backfill may name, ``[first, last)``. Beyond them the supported stores and
#: timetables disagree or fail: asyncpg writes ``datetime.min``/``max`` as PostgreSQL's
#: ``-infinity``/``infinity`` (0001-01-01T00:00Z became ``-infinity`` and its slot "in
#: flight" without a run), a time zone's offset or a timetable's step (up to a year for
#: ``@yearly``) past a date near year 1 or 9999 leaves Python's ``datetime`` range, and
#: before 1900 the IANA zones only hold local mean time (offsets in seconds).
DATE_RANGE = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC), dt.datetime(9000, 1, 1, tzinfo=dt.UTC))

# C0 and C1 control characters, DEL, and lone surrogates (never valid in UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_text(value: str, field: str, limit: int) -> None:
    """An id or a filter: at most ``limit`` characters, no control character, valid UTF-8.

    Raises:
        InvalidArgument: naming ``field``.
    """
    if len(value) > limit:
        raise InvalidArgument(f"{_leaf(field)} is longer than {limit} characters", field=field)
    if _CONTROL.search(value):
        raise InvalidArgument(f"{_leaf(field)} must not contain control characters", field=field)
    if _SURROGATE.search(value):
        raise InvalidArgument(f"{_leaf(field)} is not valid Unicode (a lone surrogate)", field=field)


def _leaf(field: str) -> str:
    return field.rsplit(".", 1)[-1]


def check_request(spec: BackfillSpec, request_id: str | None, dry_run_limit: int | None) -> None:
    """Field presence and bounds of a create request, each refusal naming its field path.

    Raises:
        InvalidArgument: naming the field.
    """
    check_text(spec.dag_id, "backfill.dag_id", MAX_DAG_ID_LENGTH)
    if request_id is not None:
        check_text(request_id, "request_id", MAX_REQUEST_ID_LENGTH)
    if dry_run_limit is not None and dry_run_limit < 0:
        raise InvalidArgument("dry_run_page_size must not be negative", field="dry_run_page_size")
    if not spec.dag_id:
        raise InvalidArgument("dag_id is required", field="backfill.dag_id")
    for name in ("from_date", "to_date"):
        value = getattr(spec, name)
        key_field = name.replace("_date", "_partition_key")
        key = getattr(spec, key_field)
        if key is not None:
            if value != BY_PARTITION_KEY:
                raise InvalidArgument(f"give {name} or {key_field}, not both", field=f"backfill.{key_field}")
            check_text(key, f"backfill.{key_field}", MAX_PARTITION_KEY_LENGTH)
            if not key.strip():
                raise InvalidArgument(f"{key_field} must not be blank", field=f"backfill.{key_field}")
            continue
        if value.tzinfo is None:
            raise InvalidArgument(f"{name} must carry a time zone", field=f"backfill.{name}")
        check_date(value, name, f"backfill.{name}")
    if not 1 <= spec.max_active_runs <= MAX_ACTIVE_RUNS_LIMIT:
        raise InvalidArgument(
            f"max_active_runs must be between 1 and {MAX_ACTIVE_RUNS_LIMIT}, got {spec.max_active_runs}",
            field="backfill.max_active_runs",
        )
    if spec.dag_run_conf is not None:
        check_conf(spec.dag_run_conf)
    if spec.task_selection is not None:
        check_task_selection(spec.task_selection)
    check_controls(spec.controls)


def check_task_selection(selection: TaskSelection) -> None:
    """A task subset's own shape: a regex Python's ``re`` compiles, or known-length task ids.

    Which tasks it names is checked against the DAG later (``sidecar.catalog.resolve_selection``).

    Raises:
        InvalidTaskSelection: naming the field under ``backfill.task_selection``.
    """
    field = "backfill.task_selection"
    if selection.task_regex is not None and selection.task_ids:
        raise InvalidTaskSelection("give either task_regex or task_ids, not both", field=field)
    if selection.task_regex is None and not selection.task_ids:
        raise InvalidTaskSelection(
            "a task selection needs task_regex or task_ids (include_upstream and "
            "include_downstream widen them)",
            field=field,
        )
    if selection.task_regex is not None:
        check_text(selection.task_regex, f"{field}.task_regex", MAX_TASK_REGEX_LENGTH)
        if not selection.task_regex:
            raise InvalidTaskSelection("task_regex must not be empty", field=f"{field}.task_regex")
        try:
            re.compile(selection.task_regex)
        except (re.error, RecursionError, OverflowError) as exc:
            raise InvalidTaskSelection(
                f"task_regex is not a valid regular expression: {exc}", field=f"{field}.task_regex"
            ) from None
        return
    if len(selection.task_ids) > MAX_SELECTED_TASK_IDS:
        raise InvalidTaskSelection(
            f"task_ids holds {len(selection.task_ids)} ids; at most {MAX_SELECTED_TASK_IDS} are accepted",
            field=f"{field}.task_ids",
        )
    for task_id in selection.task_ids:
        check_text(task_id, f"{field}.task_ids", _MAX_TASK_ID_LENGTH)
        if not task_id:
            raise InvalidTaskSelection("task_ids must not hold an empty id", field=f"{field}.task_ids")


def check_controls(controls: Controls) -> None:
    """The controls beyond Airflow's fields, each in its range.

    Raises:
        InvalidArgument: naming the field.
    """
    bounds = (
        ("max_failed_runs", controls.max_failed_runs, 1, MAX_FAILED_RUNS_LIMIT),
        ("priority", controls.priority, -PRIORITY_LIMIT, PRIORITY_LIMIT),
        ("dag_max_active_runs", controls.dag_max_active_runs, 1, MAX_ACTIVE_RUNS_LIMIT),
    )
    for name, value, low, high in bounds:
        if value is not None and not low <= value <= high:
            raise InvalidArgument(
                f"{name} must be between {low} and {high}, got {value}", field=f"backfill.{name}"
            )


def check_date(value: dt.datetime, name: str, field: str) -> None:
    """A range bound (or the date a partition key stands for) within :data:`DATE_RANGE`.

    Raises:
        InvalidArgument: naming ``field``.
    """
    first, last = DATE_RANGE
    if not first <= value < last:
        raise InvalidArgument(
            f"{name} must be on or after {first:%Y-%m-%d} and before {last:%Y-%m-%d} (UTC)", field=field
        )


def check_list_filter(dag_id: str | None) -> None:
    """A list's ``dag_id`` filter, held to the same rules as a DAG id.

    Raises:
        InvalidArgument: naming ``dag_id``.
    """
    if dag_id:
        check_text(dag_id, "dag_id", MAX_DAG_ID_LENGTH)


def check_conf(conf: dict[str, Any]) -> None:
    """A run ``conf`` every supported database stores and gives back unchanged.

    Refused: NUL anywhere (PostgreSQL's ``jsonb`` cannot hold ``\\u0000``), lone
    surrogates (not Unicode: neither UTF-8 database text nor a gRPC string carries them),
    NaN and Infinity (not JSON), integers beyond 64 bits, keys that are not strings,
    values that are not JSON, nesting deeper than :data:`MAX_CONF_DEPTH`, and a document
    larger than :data:`MAX_CONF_BYTES`.

    Raises:
        InvalidArgument: field ``backfill.dag_run_conf``, the message naming where.
    """
    for path, value in _walk(conf):
        problem = _problem(value)
        if problem is not None:
            raise _conf_error(f"holds {problem} at {path}")
    try:
        size = len(json.dumps(conf, ensure_ascii=False, separators=(",", ":")).encode())
    except (ValueError, TypeError, RecursionError) as exc:  # pragma: no cover: _walk refused it first
        raise _conf_error("is not a JSON document") from exc
    if size > MAX_CONF_BYTES:
        raise _conf_error(f"is {size} bytes of JSON; at most {MAX_CONF_BYTES} are accepted")


def _problem(value: Any) -> str | None:
    """What makes one key or scalar unstorable, if anything."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a NUL character (\\u0000)"
        if _SURROGATE.search(value):
            return "a lone surrogate (not Unicode)"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if _INT_RANGE[0] <= value <= _INT_RANGE[1] else "an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "NaN or Infinity (not a JSON number)"
    if isinstance(value, dict | list):
        return None
    return f"a value that is not JSON ({type(value).__name__})"


def _walk(root: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every key and value of ``root`` with its path (``$["a"][0]``), depth-checked, without recursion."""
    stack: list[tuple[str, Any, int]] = [("$", root, 1)]
    while stack:
        path, value, level = stack.pop()
        yield path, value
        if isinstance(value, dict):
            if level > MAX_CONF_DEPTH:
                raise _conf_error(f"nests deeper than {MAX_CONF_DEPTH} levels")
            for key, child in value.items():
                if not isinstance(key, str):
                    raise _conf_error(f"has a key that is not a string at {path}")
                yield f"{path}[{_short(key)}]", key
                stack.append((f"{path}[{_short(key)}]", child, level + 1))
        elif isinstance(value, list):
            if level > MAX_CONF_DEPTH:
                raise _conf_error(f"nests deeper than {MAX_CONF_DEPTH} levels")
            stack.extend((f"{path}[{i}]", child, level + 1) for i, child in enumerate(value))


def _short(key: str) -> str:
    """A key as it reads in a message: quoted, escaped (``ascii``), at most 40 characters."""
    return ascii(key if len(key) <= 40 else key[:40] + "…")


def _conf_error(what: str) -> InvalidArgument:
    return InvalidArgument(f"dag_run_conf {what}", field="backfill.dag_run_conf")
