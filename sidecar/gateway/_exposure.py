"""The gateway never exposes an unauthenticated sidecar beyond this machine.

``serve --no-auth`` is refused off loopback, but a gateway listening on a public address in
front of such a sidecar would hand the network what the sidecar keeps to itself. The
gateway cannot read the sidecar's flags, so it asks: one call without a token
(``GetBackfill backfills/0``). An authenticated sidecar answers ``UNAUTHENTICATED`` before
anything runs; any other answer means it serves anyone, and the gateway then answers 503
to every request instead of forwarding it. The verdict is kept for :data:`RECHECK_SECONDS`
(a sidecar restarted with other flags is noticed within that time). When both the gateway
and the sidecar are on loopback nothing is exposed, and no check is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, backfill_pb2_grpc
from sidecar.errors import DOMAIN
from sidecar.gateway._calls import Upstream
from sidecar.gateway._errors import error_body
from sidecar.names import backfill_name

log = logging.getLogger(__name__)

#: Seconds a verdict on the sidecar's authentication is trusted before asking again.
RECHECK_SECONDS = 60.0
#: Seconds the probe may take.
PROBE_TIMEOUT = 5.0
#: The ``ErrorInfo.reason`` of a refusal to forward to an unauthenticated sidecar.
SIDECAR_UNAUTHENTICATED = "SIDECAR_UNAUTHENTICATED"


class RequireAuthenticatedSidecar:
    """ASGI middleware: forwards HTTP requests only while the sidecar requires authentication."""

    def __init__(self, app: ASGIApp, upstream: Upstream, *, recheck: float = RECHECK_SECONDS) -> None:
        self._app = app
        self._upstream = upstream
        self._recheck = recheck
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: lifespan passes through; HTTP waits for a verdict."""
        if scope["type"] == "http":
            refusal = await self._refusal()
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)

    async def _refusal(self) -> JSONResponse | None:
        """None when the sidecar was seen to require authentication recently, else the 503 to send."""
        async with self._lock:
            now = time.monotonic()
            if self._checked_at is not None and now - self._checked_at < self._recheck:
                return None
            message = await self._probe()
            if message is None:
                self._checked_at = now
                return None
            self._checked_at = None
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": SIDECAR_UNAUTHENTICATED,
                "domain": DOMAIN,
            }
        ]
        return JSONResponse(error_body(503, "UNAVAILABLE", message, details), status_code=503)

    async def _probe(self) -> str | None:
        """None when a call without a token is refused as unauthenticated, else why not to forward."""
        stub = backfill_pb2_grpc.BackfillServiceStub(self._upstream.channel())
        target = self._upstream.target
        try:
            await stub.GetBackfill(
                backfill_pb2.GetBackfillRequest(name=backfill_name(0)), timeout=PROBE_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return f"the sidecar at {target} is not reachable ({code.name}); try again later"
        log.error(
            "the sidecar at %s answers calls without a token (serve --no-auth?): refusing to forward "
            "requests from off loopback; configure authentication on the sidecar",
            target,
        )
        return (
            f"the sidecar at {target} does not require authentication; the gateway forwards to it "
            "only when both listen on loopback"
        )
