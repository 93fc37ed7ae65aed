"""The root middleware: Airflow's backfill write routes go to the sidecar, the rest to Airflow.

Airflow's plugin manager adds it to the api-server's root FastAPI app
(``fastapi_root_middlewares``), inside Airflow's own access-log, GZip and token-refresh
middlewares. A request for one of the five routes of :data:`ROUTES` is answered by the
plugin's routes (:mod:`airflow_shim.plugin._routes`: Airflow's own authentication,
authorisation and validation, then the sidecar); every other request passes through untouched.
When the sidecar is unreachable and ``SIDECAR_PLUGIN_FALLBACK=airflow``, the request is
replayed to Airflow's own route instead of answering 503.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_shim.plugin._calls import SidecarCalls
from airflow_shim.plugin._routes import FALLBACK_HEADER, ROUTES, build_routes
from sidecar.config import PluginSettings

log = logging.getLogger(__name__)


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$")


_MATCHERS = tuple((method, _pattern(template)) for method, template in ROUTES)


def handled(method: str, path: str) -> bool:
    """Whether the plugin answers ``method path`` (Airflow's five backfill write routes)."""
    return any(method == m and pattern.match(path) for m, pattern in _MATCHERS)


class SidecarBackfillMiddleware:
    """ASGI middleware sending Airflow's backfill write routes to the sidecar.

    Args:
        app: the rest of Airflow's api-server.
        settings: the plugin's settings (default: read from the environment).
    """

    def __init__(self, app: ASGIApp, settings: PluginSettings | None = None) -> None:
        self.app = app
        self.settings = settings or PluginSettings.from_env()
        self.calls = SidecarCalls(self.settings)
        self.routes = build_routes(self.calls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a matching request through the sidecar; pass anything else to Airflow."""
        if scope["type"] != "http" or not handled(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        messages = await _read_request(receive)
        fell_back = False

        async def answer(message: Message) -> None:
            nonlocal fell_back
            if message["type"] == "http.response.start" and _marked(message):
                fell_back = True
            if not fell_back:
                await send(message)

        await self.routes(dict(scope), _replay(messages), answer)
        if fell_back:
            log.warning("the sidecar is unreachable: Airflow answers %s %s", scope["method"], scope["path"])
            await self.app(scope, _replay(messages), send)


def _replay(messages: list[Message]) -> Receive:
    """A ``receive`` that hands out ``messages`` again, then a disconnect."""
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return receive


def _marked(message: MutableMapping[str, Any]) -> bool:
    header = FALLBACK_HEADER.encode()
    return any(name.lower() == header for name, _ in message.get("headers", ()))


async def _read_request(receive: Receive) -> list[Message]:
    """The request's body messages, read in full so they can be replayed to Airflow."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages
