"""Airflow's own backfill write routes, answered through the sidecar.

Each route has the path, body model, dependencies and endpoint name of Airflow 3.3's route in
``airflow/api_fastapi/core_api/routes/public/backfills.py``: the same ``get_user`` (bearer
token or session cookie), the same ``requires_access_backfill`` authorisation (the auth
manager's ``is_authorized_dag`` on the DAG named in the body, or on the DAG of the backfill
named in the path), the same ``action_logging`` audit entry, and FastAPI's own validation of
``BackfillPostBody`` and ``backfill_id``. So a request is authenticated, authorised and
validated exactly as Airflow would, with Airflow's own 401/403/404/422 answers, before the
sidecar is called; only the work itself (Airflow's ``_create_backfill``, one run at a time in
one transaction) is replaced by the sidecar's batched, windowed creation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.datamodels.backfills import BackfillPostBody
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_backfill
from airflow.api_fastapi.logging.decorators import action_logging
from airflow.models.dag import DagModel
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from google.protobuf.message import Message
from pydantic import NonNegativeInt
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request

from airflow_shim.plugin._calls import SidecarCalls, SidecarUnavailable
from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.gateway import (
    AirflowBackfillBody,
    AirflowHttpError,
    airflow_backfill_json,
    airflow_create_request,
    airflow_dry_run_json,
)
from sidecar.names import backfill_name

log = logging.getLogger(__name__)

#: The routes the plugin answers: (HTTP method, path template) as Airflow declares them.
ROUTES = (
    ("POST", "/api/v2/backfills"),
    ("POST", "/api/v2/backfills/dry_run"),
    ("PUT", "/api/v2/backfills/{backfill_id}/pause"),
    ("PUT", "/api/v2/backfills/{backfill_id}/unpause"),
    ("PUT", "/api/v2/backfills/{backfill_id}/cancel"),
)
#: Response header marking "let Airflow answer instead" (the sidecar is down, fallback is on).
FALLBACK_HEADER = "x-airflow-sidecar-fallback"


def _sidecar_request(body: BackfillPostBody, *, dry_run: bool) -> pb.CreateBackfillRequest:
    """Airflow's validated body as the sidecar's create request (the gateway's translation)."""
    try:
        ours = AirflowBackfillBody.model_validate(body.model_dump())
        return airflow_create_request(ours, dry_run=dry_run)
    except AirflowHttpError as exc:
        raise HTTPException(exc.status, exc.detail) from None


def _display_name(session: Session, backfill: pb.Backfill) -> dict[str, Any]:
    """Airflow's ``BackfillResponse`` JSON, with the DAG's display name as Airflow gives it."""
    answer = airflow_backfill_json(backfill)
    column: Any = DagModel.dag_display_name  # a hybrid property: the column, or the DAG id
    display = session.scalar(select(column).where(DagModel.dag_id == backfill.dag_id))
    if display:
        answer["dag_display_name"] = display
    return answer


#: Airflow's PUT routes on one backfill: action -> (RPC, request class, response class).
_STEERING: dict[str, tuple[str, type[Message], type[Message]]] = {
    "pause": ("PauseBackfill", pb.PauseBackfillRequest, pb.PauseBackfillResponse),
    "unpause": ("UnpauseBackfill", pb.UnpauseBackfillRequest, pb.UnpauseBackfillResponse),
    "cancel": ("CancelBackfill", pb.CancelBackfillRequest, pb.CancelBackfillResponse),
}


def _steer(
    calls: SidecarCalls,
    action: str,
    rpc: str,
    request_class: Callable[..., Message],
    response_class: type[Message],
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The endpoint of ``PUT /api/v2/backfills/{backfill_id}/{action}``, named as Airflow's is.

    The name matters: Airflow's ``action_logging`` records the endpoint's name as the event
    (``pause_backfill``, ``unpause_backfill``, ``cancel_backfill``).
    """

    async def endpoint(backfill_id: NonNegativeInt, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
        request = request_class(name=backfill_name(backfill_id))
        changed = await calls.call(rpc, request, response_class, user.get_name())
        return _display_name(session, changed.backfill)

    endpoint.__name__ = endpoint.__qualname__ = f"{action}_backfill"
    return endpoint


def build_routes(calls: SidecarCalls) -> FastAPI:
    """The FastAPI app holding Airflow's five backfill write routes, answered by the sidecar."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(SidecarUnavailable)
    async def unavailable(request: Request, exc: SidecarUnavailable) -> JSONResponse:
        headers = {FALLBACK_HEADER: "1"} if calls.fallback == "airflow" else None
        return JSONResponse({"detail": exc.detail}, status_code=503, headers=headers)

    @app.post(
        "/api/v2/backfills",
        dependencies=[Depends(action_logging()), Depends(requires_access_backfill(method="POST"))],
    )
    async def create_backfill(
        backfill_request: BackfillPostBody, user: GetUserDep, session: SessionDep
    ) -> dict[str, Any]:
        request = _sidecar_request(backfill_request, dry_run=False)
        created = await calls.call("CreateBackfill", request, pb.CreateBackfillResponse, user.get_name())
        log.info(
            "backfill %s of %s created by the sidecar for %s",
            created.backfill.id,
            created.backfill.dag_id,
            user.get_name(),
        )
        return _display_name(session, created.backfill)

    @app.post("/api/v2/backfills/dry_run", dependencies=[Depends(requires_access_backfill(method="POST"))])
    async def create_backfill_dry_run(body: BackfillPostBody, user: GetUserDep) -> dict[str, Any]:
        request = _sidecar_request(body, dry_run=True)
        planned = await calls.call("CreateBackfill", request, pb.CreateBackfillResponse, user.get_name())
        return airflow_dry_run_json(planned)

    for action, (rpc, request_class, response_class) in _STEERING.items():
        app.put(
            f"/api/v2/backfills/{{backfill_id}}/{action}",
            dependencies=[Depends(action_logging()), Depends(requires_access_backfill(method="PUT"))],
        )(_steer(calls, action, rpc, request_class, response_class))

    return app
