"""The REST gateway: HTTP/JSON in front of the sidecar's gRPC service.

Two families of routes, one ASGI app (served by ``airflow-sidecar gateway`` with uvicorn):

* ``/v1/...``: the ``google.api.http`` bindings of the protos, built from the descriptors at
  start-up, with the proto3 JSON mapping and AIP-193 error bodies;
* ``/api/v2/backfills...``: Airflow 3.3.2's public backfill routes, so that Airflow's own client
  works against the sidecar unchanged.

``/openapi.json`` describes both. The HTTP ``Authorization`` header is forwarded to gRPC.
"""

from sidecar.gateway._app import GATEWAY_ROUTES, OPENAPI_PATH, Gateway, GatewayConfig, create_app
from sidecar.gateway._bindings import Binding, PathTemplate, bindings_of
from sidecar.gateway._command import add_gateway_parser, run_gateway
from sidecar.gateway._openapi import openapi_document

__all__ = [
    "GATEWAY_ROUTES",
    "OPENAPI_PATH",
    "Binding",
    "Gateway",
    "GatewayConfig",
    "PathTemplate",
    "add_gateway_parser",
    "bindings_of",
    "create_app",
    "openapi_document",
    "run_gateway",
]
