"""Airflow 3.3.2's public backfill routes (``/api/v2/backfills``) on top of the gRPC service.

Request and response JSON, status codes and ``{"detail": ...}`` errors are Airflow's, so that
Airflow's own client (``apache-airflow-client``) works unchanged. Validation uses pydantic
models with the same fields and rules as Airflow's datamodels (unknown body fields: 422
``extra_forbid``), and 422 bodies have FastAPI's shape. Where the sidecar's answer differs in
form only, it is translated:

* ``dag_display_name`` is the DAG id (the sidecar's resource does not carry the display name);
* the sidecar's own fields (``mode``) have no place in Airflow's body: such backfills are
  windowed, the sidecar's default;
* ``run_on_latest_version`` means what it means in Airflow (unset: the DAG's
  ``rerun_with_latest_version``, then ``[core]``, then true), and every run is written on the
  DAG and bundle version of the backfill's creation, as Airflow's ``_create_backfill`` does;
* naive dates are taken as UTC, Airflow's default ``[core] default_timezone``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Literal

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.auth import TOKEN_EXPIRED, TOKEN_INVALID
from sidecar.errors import BackfillRangeOverlaps
from sidecar.estimate_json import estimate_dict
from sidecar.gateway._calls import Upstream
from sidecar.gateway._errors import CallError, from_rpc_error, unexpected
from sidecar.names import backfill_name
from sidecar.vocabulary import ReprocessBehavior

PREFIX = "/api/v2/backfills"
_SERVICE = "/airflow_sidecar.v1.BackfillService/"
_MAX_ID = 2**31 - 1
_FALLBACK_PAGE_LIMIT = 50
_MAXIMUM_PAGE_LIMIT = 100
_MAX_SORT_PARAMS = 10
_DRY_RUN_LIMIT = 10000
_MAX_OFFSET = 2**31 - 1  # ListBackfillsRequest.skip is an int32


class TaskSelectionBody(BaseModel):
    """A sidecar extension (Airflow has no such field): run only some of the DAG's tasks."""

    model_config = ConfigDict(extra="forbid")

    task_regex: str | None = Field(default=None, description="Python regex searched in each task id.")
    task_ids: list[str] = Field(default_factory=list, description="Explicit task ids (not with task_regex).")
    include_upstream: bool = False
    include_downstream: bool = False
    selected_task_ids: list[str] = Field(
        default_factory=list, description="Output only: what the selection resolved to (ignored in requests)."
    )


class WebhookBody(BaseModel):
    """A sidecar extension (Airflow has no such field): where the backfill's events are POSTed."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="https:// URL; never shown back (a Slack URL's path is its secret).")
    format: Literal["json", "slack"] = Field(default="json", description="json, or a Slack message.")


class BackfillPostBody(BaseModel):
    """Object used for create backfill request."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    run_backwards: bool = False
    dag_run_conf: dict[str, Any] | None = None
    reprocess_behavior: ReprocessBehavior = ReprocessBehavior.NONE
    max_active_runs: int = 10
    run_on_latest_version: bool | None = Field(
        default=None,
        description="Run on the latest bundle version of the Dag for each backfilled run. "
        "If not specified, falls back to the DAG-level ``rerun_with_latest_version`` parameter, "
        "then the ``[core] rerun_with_latest_version`` config option, "
        "and finally ``True`` (the historical default for backfills).",
    )
    task_selection: TaskSelectionBody | None = Field(
        default=None, description="Sidecar extension: run only these tasks (docs/controls.md, Task subsets)."
    )
    # Sidecar extensions (docs/controls.md): Airflow's API has no such fields.
    webhook: WebhookBody | None = Field(
        default=None, description="Sidecar extension: POST the backfill's events, signed (docs/controls.md)."
    )
    max_failed_runs: int | None = Field(
        default=None, description="Sidecar extension: pause the backfill once this many of its runs failed."
    )
    priority: int = Field(
        default=0, description="Sidecar extension: higher first where the shim chooses the runs that start."
    )
    dag_max_active_runs: int | None = Field(
        default=None, description="Sidecar extension: a cap on running backfill runs across the DAG."
    )
    concurrent: bool = Field(
        default=False,
        description="Sidecar extension: run beside the DAG's other open backfills whose ranges do not overlap.",
    )


class BackfillResponse(BaseModel):
    """Base serializer for Backfill."""

    id: NonNegativeInt
    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    dag_run_conf: dict[str, Any] | None
    is_paused: bool
    reprocess_behavior: ReprocessBehavior
    max_active_runs: int
    created_at: dt.datetime
    completed_at: dt.datetime | None
    updated_at: dt.datetime
    dag_display_name: str
    # Sidecar extensions (docs/controls.md).
    max_failed_runs: int | None = None
    priority: int = 0
    pause_reason: str | None = Field(
        default=None, description="Sidecar extension: why the sidecar paused it (max_failed_runs reached)."
    )
    dag_max_active_runs: int | None = None
    concurrent: bool = False


class BackfillCollectionResponse(BaseModel):
    """Backfill Collection serializer for responses."""

    backfills: list[BackfillResponse]
    total_entries: int


class DryRunBackfillResponse(BaseModel):
    """Backfill serializer for responses in dry-run mode."""

    logical_date: dt.datetime | None
    partition_key: str | None
    partition_date: dt.datetime | None


class DryRunBackfillCollectionResponse(BaseModel):
    """Backfill collection serializer for responses in dry-run mode."""

    backfills: list[DryRunBackfillResponse]
    total_entries: int


class HTTPExceptionResponse(BaseModel):
    """HTTPException Model used for error response."""

    detail: str | dict[str, Any]


MODELS: tuple[type[BaseModel], ...] = (
    BackfillPostBody,
    BackfillResponse,
    BackfillCollectionResponse,
    DryRunBackfillResponse,
    DryRunBackfillCollectionResponse,
    HTTPExceptionResponse,
)

_REPROCESS_IN = {
    ReprocessBehavior.NONE: pb.REPROCESS_BEHAVIOR_NONE,
    ReprocessBehavior.FAILED: pb.REPROCESS_BEHAVIOR_FAILED,
    ReprocessBehavior.COMPLETED: pb.REPROCESS_BEHAVIOR_COMPLETED,
}
_REPROCESS_OUT = {v: k for k, v in _REPROCESS_IN.items()}
_NON_NEGATIVE = TypeAdapter(NonNegativeInt)
_ORDERINGS = ("id",)


class HttpError(Exception):
    """An answer other than 200, in Airflow's form."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail

    def response(self) -> JSONResponse:
        """``{"detail": ...}`` with the status."""
        return JSONResponse({"detail": self.detail}, status_code=self.status)


class _LocalError(HttpError):
    """Refused by the gateway's own validation, before any call reached the sidecar."""


def _validation_errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    """Pydantic errors in FastAPI's 422 shape (``loc`` starts with body/query/path)."""
    out = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": [where, *error["loc"]],
            "msg": error["msg"],
            "input": _jsonable(error.get("input")),
        }
        if "ctx" in error:
            item["ctx"] = {k: _jsonable(v) for k, v in error["ctx"].items()}
        out.append(item)
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)  # what the response will do: no NaN or Infinity
    except (TypeError, ValueError, RecursionError):
        return str(value)
    return value


def missing(where: str, name: str | None = None) -> HttpError:
    """FastAPI's 422 for a missing required parameter or body."""
    loc = [where] if name is None else [where, name]
    return _LocalError(422, [{"type": "missing", "loc": loc, "msg": "Field required", "input": None}])


def _backfill_id(raw: str) -> int:
    try:
        value: int = _NON_NEGATIVE.validate_python(raw)
    except ValidationError as exc:
        raise _LocalError(422, _path_error(exc, raw)) from None
    if value > _MAX_ID:
        raise _LocalError(404, "Backfill not found")
    return value


def _path_error(exc: ValidationError, raw: str) -> list[dict[str, Any]]:
    errors = _validation_errors(exc, "path")
    for error in errors:
        error["loc"] = ["path", "backfill_id"]
        error["input"] = raw
    return errors


def _datetime(ts: Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)


def backfill_json(b: pb.Backfill) -> dict[str, Any]:
    """A sidecar Backfill as Airflow's ``BackfillResponse`` JSON."""
    conf = json.loads(b.dag_run_conf) if b.dag_run_conf else None
    response = BackfillResponse(
        id=b.id,
        dag_id=b.dag_id,
        from_date=_datetime(b.from_date),
        to_date=_datetime(b.to_date),
        dag_run_conf=conf if isinstance(conf, dict) else None,
        is_paused=b.is_paused,
        reprocess_behavior=_REPROCESS_OUT.get(b.reprocess_behavior, ReprocessBehavior.NONE),
        max_active_runs=b.max_active_runs,
        created_at=_datetime(b.create_time),
        completed_at=_datetime(b.complete_time) if b.HasField("complete_time") else None,
        updated_at=_datetime(b.update_time),
        dag_display_name=b.dag_id,
        max_failed_runs=b.max_failed_runs if b.HasField("max_failed_runs") else None,
        priority=b.priority,
        pause_reason=b.pause_reason or None,
        dag_max_active_runs=b.dag_max_active_runs if b.HasField("dag_max_active_runs") else None,
        concurrent=b.concurrent,
    )
    shown = response.model_dump(mode="json")
    if b.HasField("webhook"):  # sidecar extensions, only on backfills that have them
        w = b.webhook
        shown["webhook"] = {
            "target": w.target,
            "format": "slack" if w.format == pb.Webhook.FORMAT_SLACK else "json",
            "undelivered": w.undelivered,
            "given_up": w.given_up,
            "last_error": w.last_error or None,
        }
    if b.HasField("estimate"):
        shown["estimate"] = estimate_dict(b.estimate)
    if b.HasField("task_selection"):  # the sidecar extension, only on backfills that have one
        s = b.task_selection
        shown["task_selection"] = TaskSelectionBody(
            task_regex=s.task_regex or None,
            task_ids=list(s.task_ids),
            include_upstream=s.include_upstream,
            include_downstream=s.include_downstream,
            selected_task_ids=list(s.selected_task_ids),
        ).model_dump(mode="json")
    return shown


def dry_run_json(response: pb.CreateBackfillResponse) -> dict[str, Any]:
    """A validate-only create's planned runs as Airflow's ``DryRunBackfillCollectionResponse`` JSON."""
    runs = [
        DryRunBackfillResponse(
            logical_date=None if run.partition_key else _datetime(run.logical_date),
            partition_key=run.partition_key or None,
            partition_date=_datetime(run.partition_date) if run.HasField("partition_date") else None,
        )
        for run in response.planned_runs
        if run.disposition in (pb.DISPOSITION_CREATE, pb.DISPOSITION_REPROCESS)
    ]
    return DryRunBackfillCollectionResponse(backfills=runs, total_entries=len(runs)).model_dump(mode="json")


#: Lone surrogates: JSON text may escape one (``"\\ud800"``), UTF-8 cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _coerce(value: dt.datetime) -> Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    ts = Timestamp()
    try:
        ts.FromDatetime(value.astimezone(dt.UTC))
    except (ValueError, OverflowError) as exc:
        raise _LocalError(422, f"date out of range: {exc}") from None
    return ts


def _offset(value: dt.datetime) -> int:
    """The UTC offset the caller wrote ``value`` in, in seconds (a naive value is UTC).

    Airflow keeps it (``timezone.coerce_datetime``) and names a run on the lower bound
    with it; the Timestamp loses it, so it travels beside it.
    """
    offset = value.utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def parse_body(body: Any, present: bool) -> BackfillPostBody:
    """Validate a create/dry-run body the way Airflow does (after its ``dag_id`` type check)."""
    if not present:
        raise missing("body")
    if isinstance(body, dict) and "dag_id" in body and not isinstance(body["dag_id"], str):
        raise _LocalError(400, "'dag_id' must be a string")
    try:
        return BackfillPostBody.model_validate(body)
    except ValidationError as exc:
        raise _LocalError(422, _validation_errors(exc, "body")) from None


def create_request(body: BackfillPostBody, *, dry_run: bool) -> pb.CreateBackfillRequest:
    """The sidecar's create (or, with ``dry_run``, validate-only) request for Airflow's body.

    Raises:
        HttpError: a value the sidecar's fields cannot carry (Airflow's 422).
    """
    for name in ("max_active_runs", "max_failed_runs", "priority", "dag_max_active_runs"):
        value = getattr(body, name)
        if value is not None and not -(2**31) <= value < 2**31:
            raise _LocalError(422, f"{name} is out of range: {value}")
    if _SURROGATE.search(body.dag_id):  # JSON can escape one; a protobuf string (UTF-8) cannot hold it
        raise _LocalError(422, "dag_id is not valid Unicode (a lone surrogate)")
    backfill = pb.Backfill(
        dag_id=body.dag_id,
        from_date=_coerce(body.from_date),
        to_date=_coerce(body.to_date),
        from_date_utc_offset_seconds=_offset(body.from_date),
        to_date_utc_offset_seconds=_offset(body.to_date),
        run_backwards=body.run_backwards,
        reprocess_behavior=_REPROCESS_IN[body.reprocess_behavior],
        max_active_runs=body.max_active_runs,
        mode=pb.MODE_WINDOWED,
        max_failed_runs=body.max_failed_runs,
        priority=body.priority,
        dag_max_active_runs=body.dag_max_active_runs,
        concurrent=body.concurrent,
    )
    if body.run_on_latest_version is not None:
        backfill.run_on_latest_version = body.run_on_latest_version
    if body.webhook is not None:
        if _SURROGATE.search(body.webhook.url):
            raise _LocalError(422, "webhook.url is not valid Unicode (a lone surrogate)")
        backfill.webhook.url = body.webhook.url
        backfill.webhook.format = (
            pb.Webhook.FORMAT_SLACK if body.webhook.format == "slack" else pb.Webhook.FORMAT_JSON
        )
    if body.task_selection is not None:
        if any(
            _SURROGATE.search(t)
            for t in [body.task_selection.task_regex or "", *body.task_selection.task_ids]
        ):
            raise _LocalError(422, "task_selection is not valid Unicode (a lone surrogate)")
        backfill.task_selection.CopyFrom(
            pb.TaskSelection(
                task_regex=body.task_selection.task_regex or "",
                task_ids=body.task_selection.task_ids,
                include_upstream=body.task_selection.include_upstream,
                include_downstream=body.task_selection.include_downstream,
            )
        )
    if body.dag_run_conf is not None:
        try:
            backfill.dag_run_conf = json.dumps(body.dag_run_conf, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _LocalError(422, f"dag_run_conf is not serialisable: {exc}") from None
    return pb.CreateBackfillRequest(
        backfill=backfill, validate_only=dry_run, dry_run_page_size=_DRY_RUN_LIMIT if dry_run else 0
    )


def airflow_error(error: CallError, *, dag_id: str = "") -> HttpError:
    """A failed gRPC call as Airflow's answer to the same failure."""
    code, reason, message = error.code, error.reason, error.message
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if reason == TOKEN_EXPIRED:
            return HttpError(401, "Token Expired")
        if reason == TOKEN_INVALID:
            return HttpError(403, "Invalid JWT token")
        return HttpError(401, "Not authenticated")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return HttpError(403, "Forbidden")
    if code == grpc.StatusCode.NOT_FOUND:
        return HttpError(404, "Backfill not found" if reason == "BACKFILL_NOT_FOUND" else message)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        if reason == BackfillRangeOverlaps.reason:  # a sidecar extension: name the backfill and dates
            return HttpError(409, message)
        return HttpError(409, f"There is already a running backfill for dag {dag_id}" if dag_id else message)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if reason == "INVALID_STATE_TRANSITION":
            return HttpError(409, "Backfill is already completed.")
        if reason == "NON_PERIODIC_SCHEDULE":
            return HttpError(422, message)
        return HttpError(400, message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return HttpError(422, message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return HttpError(429, message)
    if code == grpc.StatusCode.UNAVAILABLE:
        return HttpError(503, message)
    if not error.correlation_id:
        error = unexpected(RuntimeError(f"{code.name}: {message[:2000]}"), "an /api/v2 call")
    return internal_server_error(error.correlation_id)


def internal_server_error(correlation_id: str) -> HttpError:
    """Airflow's 500, naming only the correlation id of the log line that holds the details."""
    return HttpError(500, f"Internal Server Error (correlation id {correlation_id})")


class AirflowRoutes:
    """The seven Airflow-compatible backfill routes."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def _call(self, method: str, request: Message, response_class: type[Message], http: Request) -> Any:
        try:
            return await self._upstream.unary(
                _SERVICE + method, request, response_class, http.headers.get("authorization")
            )
        except grpc.RpcError as exc:
            dag_id = ""
            if isinstance(request, pb.CreateBackfillRequest):
                dag_id = request.backfill.dag_id
            raise airflow_error(from_rpc_error(exc), dag_id=dag_id) from None

    async def dispatch(self, http: Request, path: str, body: Any, has_body: bool) -> JSONResponse:
        """Route and answer one request under ``/api/v2/backfills``."""
        try:
            return JSONResponse(await self._route(http, path, body, has_body))
        except _LocalError as exc:
            # Airflow authenticates before it validates: a bad token wins over a bad body.
            return (await self._authentication_error(http) or exc).response()
        except HttpError as exc:
            return exc.response()

    async def _authentication_error(self, http: Request) -> HttpError | None:
        """Airflow's answer if the caller's token is refused, else None (one cheap authenticated call)."""
        try:
            await self._upstream.unary(
                _SERVICE + "ListBackfills",
                pb.ListBackfillsRequest(page_size=1),
                pb.ListBackfillsResponse,
                http.headers.get("authorization"),
            )
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                return airflow_error(error)
        return None

    async def _route(self, http: Request, path: str, body: Any, has_body: bool) -> Any:
        rest = path[len(PREFIX) :].strip("/")
        parts = rest.split("/") if rest else []
        method = http.method
        if not parts:
            if method == "GET":
                return await self.list(http)
            if method == "POST":
                return await self.create(http, body, has_body, dry_run=False)
            raise HttpError(405, "Method Not Allowed")
        if parts == ["dry_run"]:
            if method == "POST":
                return await self.create(http, body, has_body, dry_run=True)
            if method != "GET":
                raise HttpError(405, "Method Not Allowed")
        if len(parts) == 1:
            if method != "GET":
                raise HttpError(405, "Method Not Allowed")
            name = backfill_name(_backfill_id(parts[0]))
            got = await self._call(
                "GetBackfill", pb.GetBackfillRequest(name=name), pb.GetBackfillResponse, http
            )
            return backfill_json(got.backfill)
        if len(parts) == 2 and parts[1] in ("pause", "unpause", "cancel"):
            if method != "PUT":
                raise HttpError(405, "Method Not Allowed")
            name = backfill_name(_backfill_id(parts[0]))
            request, response_class, rpc = {
                "pause": (pb.PauseBackfillRequest(name=name), pb.PauseBackfillResponse, "PauseBackfill"),
                "unpause": (
                    pb.UnpauseBackfillRequest(name=name),
                    pb.UnpauseBackfillResponse,
                    "UnpauseBackfill",
                ),
                "cancel": (pb.CancelBackfillRequest(name=name), pb.CancelBackfillResponse, "CancelBackfill"),
            }[parts[1]]
            changed = await self._call(rpc, request, response_class, http)
            return backfill_json(changed.backfill)
        raise HttpError(404, "Not Found")

    async def create(self, http: Request, body: Any, has_body: bool, *, dry_run: bool) -> Any:
        """``POST /api/v2/backfills`` and ``POST /api/v2/backfills/dry_run``."""
        parsed = parse_body(body, has_body)
        request = create_request(parsed, dry_run=dry_run)
        response = await self._call("CreateBackfill", request, pb.CreateBackfillResponse, http)
        return backfill_json(response.backfill) if not dry_run else dry_run_json(response)

    async def list(self, http: Request) -> Any:
        """``GET /api/v2/backfills?dag_id=…&limit=…&offset=…&order_by=…``."""
        query = http.query_params
        dag_id = query.get("dag_id")
        if dag_id is None:
            raise missing("query", "dag_id")
        limit = _query_int(query.get("limit"), "limit", _FALLBACK_PAGE_LIMIT)
        offset = _query_int(query.get("offset"), "offset", 0)
        orderings = query.getlist("order_by") or ["id"]
        if len(orderings) > _MAX_SORT_PARAMS:
            raise _LocalError(
                400,
                f"Ordering with more than {_MAX_SORT_PARAMS} parameters is not allowed. Provided: {orderings}",
            )
        for ordering in orderings:
            if ordering.lstrip("-") not in _ORDERINGS:
                raise _LocalError(
                    400,
                    f"Ordering with '{ordering.lstrip('-')}' is disallowed or the attribute does not exist on the model",
                )
        size = min(limit, _MAXIMUM_PAGE_LIMIT)
        # One page and its count, read in the database (AIP-158 ``skip`` is Airflow's offset).
        page = await self._call(
            "ListBackfills",
            pb.ListBackfillsRequest(
                dag_id=dag_id,
                page_size=max(size, 1),
                skip=min(offset, _MAX_OFFSET),
                order_by="id desc" if orderings[0].startswith("-") else "id",
            ),
            pb.ListBackfillsResponse,
            http,
        )
        window = list(page.backfills)[:size]
        return {"backfills": [backfill_json(b) for b in window], "total_entries": page.total_size}


def _query_int(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value: int = _NON_NEGATIVE.validate_python(raw)
    except ValidationError as exc:
        errors = _validation_errors(exc, "query")
        for error in errors:
            error["loc"] = ["query", name]
            error["input"] = raw
        raise _LocalError(422, errors) from None
    return value
