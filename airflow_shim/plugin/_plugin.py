"""The Airflow plugin: registered by the ``airflow.plugins`` entry point, on with ``SIDECAR_TARGET``.

Airflow's plugin manager instantiates :class:`SidecarPlugin` in every Airflow process (the
scheduler too); only the api-server uses what it registers. With ``SIDECAR_TARGET`` unset in
the process's environment it registers nothing, so installing the ``shim`` extra changes no
behaviour until an operator switches it on. What it registers is built lazily, by the
api-server, so no other Airflow process imports the api-server's modules because of it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.config import PluginSettings

#: Where the plugin's page app is mounted on the api-server.
PAGE_PREFIX = "/sidecar"
#: Where Airflow's UI shows the page (``/plugin/<url_route>``).
URL_ROUTE = "sidecar-backfills"


def sidecar_middleware(app: ASGIApp, settings: PluginSettings) -> ASGIApp:
    """The root middleware (built by Starlette when the api-server assembles its app)."""
    from airflow_shim.plugin._middleware import SidecarBackfillMiddleware

    return SidecarBackfillMiddleware(app, settings)


class _Page:
    """The page's FastAPI app, built on its first request."""

    def __init__(self, settings: PluginSettings) -> None:
        self._settings = settings
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from airflow_shim.plugin._page import build_page

            self._app = build_page(self._settings)
        await self._app(scope, receive, send)


class SidecarPlugin(AirflowPlugin):
    """Airflow's backfill routes through the sidecar, and a page of backfill plans in the UI."""

    name = "airflow_sidecar"

    def __init__(self) -> None:
        super().__init__()
        settings = PluginSettings.from_env()
        # Instance lists: AirflowPlugin's class-level lists are shared by every plugin.
        self.fastapi_root_middlewares: list[dict[str, Any]] = []
        self.fastapi_apps: list[dict[str, Any]] = []
        self.external_views: list[dict[str, Any]] = []
        if not settings.enabled:
            return
        self.fastapi_root_middlewares.append(
            {
                "middleware": sidecar_middleware,
                "args": [],
                "kwargs": {"settings": settings},
                "name": "Backfills through the airflow-sidecar",
            }
        )
        self.fastapi_apps.append(
            {"app": _Page(settings), "url_prefix": PAGE_PREFIX, "name": "airflow-sidecar backfill plans"}
        )
        self.external_views.append(
            {
                "name": "Backfill plans",
                "href": f"{PAGE_PREFIX}/backfills",
                "destination": "nav",
                "category": "browse",
                "url_route": URL_ROUTE,
            }
        )
