"""One configuration: frozen settings built from flags and ``SIDECAR_*`` variables in one place.

* :class:`ServerSettings` (with :class:`AuthConfig` and :class:`TlsConfig`): ``serve``.
* :class:`ClientSettings` (with :class:`ClientSecurity`): the CLI's ``backfill`` commands;
  :func:`add_connection_arguments` is the one parser of connection options (target, timeout,
  token, TLS) that the CLI and the gateway share, and the shim reads the same variables.
* :class:`GatewaySettings`: ``gateway``.
* :class:`ShimSettings`: the scheduler shim (environment only).
* :class:`PluginSettings`: the Airflow plugin in Airflow's api-server (environment only).

Nothing else in the sidecar reads the environment (OpenTelemetry's own ``OTEL_*`` variables
aside, which its SDK defines). The package is a leaf: importing it loads ``grpc`` and nothing
of the server, so the scheduler shim can use it.
"""

from sidecar.config._client import (
    DEFAULT_TARGET,
    ClientSecurity,
    ClientSettings,
    add_connection_arguments,
    read_token,
    seconds,
)
from sidecar.config._env import Environ, enabled
from sidecar.config._gateway import DEFAULT_GATEWAY_LISTEN, GatewaySettings, add_gateway_arguments
from sidecar.config._plugin import PluginSettings
from sidecar.config._server import (
    AIRFLOW_AUDIENCE,
    AuthConfig,
    ServerSettings,
    TlsConfig,
    add_database_argument,
    add_jwt_secret_arguments,
    add_server_arguments,
)
from sidecar.config._shim import SHIM_VARIABLES, ShimSettings, shim_auth_mode, shim_help
from sidecar.config._webhooks import WebhookSettings, add_webhook_arguments

__all__ = [
    "AIRFLOW_AUDIENCE",
    "DEFAULT_GATEWAY_LISTEN",
    "DEFAULT_TARGET",
    "SHIM_VARIABLES",
    "AuthConfig",
    "ClientSecurity",
    "ClientSettings",
    "Environ",
    "GatewaySettings",
    "PluginSettings",
    "ServerSettings",
    "ShimSettings",
    "TlsConfig",
    "WebhookSettings",
    "add_connection_arguments",
    "add_database_argument",
    "add_gateway_arguments",
    "add_jwt_secret_arguments",
    "add_server_arguments",
    "add_webhook_arguments",
    "enabled",
    "read_token",
    "seconds",
    "shim_auth_mode",
    "shim_help",
]
