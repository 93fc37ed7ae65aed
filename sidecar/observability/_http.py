"""A tiny HTTP endpoint for operators: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (database).

Kept apart from the gRPC port so that probes and scrapes need no token and no gRPC
client; it listens on loopback unless configured otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sidecar.observability._metrics import render

log = logging.getLogger(__name__)

#: A readiness check: raises (or returns False) when the sidecar cannot serve.
ReadinessCheck = Callable[[], Awaitable[bool]]

_MAX_REQUEST_LINE = 8192


class OpsServer:
    """Serves the operator endpoints on ``host:port``."""

    def __init__(self, host: str, port: int, ready: ReadinessCheck, *, ready_timeout: float = 2.0) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._ready_timeout = ready_timeout
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve in the background."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if len(line) > _MAX_REQUEST_LINE:
                await self._respond(writer, 414, b"request line too long\n")
                return
            # Drain the headers; the endpoints take no input.
            while (header := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                if len(header) > _MAX_REQUEST_LINE:
                    await self._respond(writer, 431, b"header too long\n")
                    return
            parts = line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                await self._respond(writer, 405, b"method not allowed\n")
                return
            path = parts[1].split("?", 1)[0]
            if path == "/metrics":
                await self._respond(writer, 200, render(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                await self._respond(writer, 200, b"ok\n")
            elif path == "/readyz":
                ok = False
                with contextlib.suppress(Exception):
                    ok = await asyncio.wait_for(self._ready(), self._ready_timeout)
                await self._respond(
                    writer, 200 if ok else 503, b"ready\n" if ok else b"database unreachable\n"
                )
            else:
                await self._respond(writer, 404, b"not found\n")
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        reason = {
            200: "OK",
            404: "Not Found",
            405: "Method Not Allowed",
            414: "URI Too Long",
            431: "Request Header Fields Too Large",
            503: "Service Unavailable",
        }[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
