"""The REST gateway: HTTP/JSON in front of the sidecar's gRPC service.

Two families of routes, one ASGI app (served by ``airflow-sidecar gateway`` with uvicorn):

* ``/v1/...``: the ``google.api.http`` bindings of the protos, built from the descriptors at
  start-up, with the proto3 JSON mapping and AIP-193 error bodies;
* ``/api/v2/backfills...``: Airflow 3.3.2's public backfill routes, so that Airflow's own client
  works against the sidecar unchanged.

``/openapi.json`` describes both. The HTTP ``Authorization`` header is forwarded to gRPC.

The translation between Airflow's ``/api/v2`` JSON and the gRPC messages (``airflow_*``,
:class:`Upstream`, :func:`from_rpc_error`) is public so that the Airflow plugin
(:mod:`airflow_shim.plugin`) answers Airflow's own routes with the same code.
"""

from sidecar.gateway._airflow import BackfillPostBody as AirflowBackfillBody
from sidecar.gateway._airflow import HttpError as AirflowHttpError
from sidecar.gateway._airflow import airflow_error
from sidecar.gateway._airflow import backfill_json as airflow_backfill_json
from sidecar.gateway._airflow import create_request as airflow_create_request
from sidecar.gateway._airflow import dry_run_json as airflow_dry_run_json
from sidecar.gateway._app import GATEWAY_ROUTES, OPENAPI_PATH, Gateway, GatewayConfig, create_app
from sidecar.gateway._bindings import Binding, PathTemplate, bindings_of
from sidecar.gateway._calls import Upstream
from sidecar.gateway._command import add_gateway_parser, run_gateway
from sidecar.gateway._errors import CallError, from_rpc_error
from sidecar.gateway._openapi import openapi_document

__all__ = [
    "GATEWAY_ROUTES",
    "OPENAPI_PATH",
    "AirflowBackfillBody",
    "AirflowHttpError",
    "Binding",
    "CallError",
    "Gateway",
    "GatewayConfig",
    "PathTemplate",
    "Upstream",
    "add_gateway_parser",
    "airflow_backfill_json",
    "airflow_create_request",
    "airflow_dry_run_json",
    "airflow_error",
    "bindings_of",
    "create_app",
    "from_rpc_error",
    "openapi_document",
    "run_gateway",
]
