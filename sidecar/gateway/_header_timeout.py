"""A deadline for each request's line and headers, which uvicorn does not have of its own.

uvicorn closes idle keep-alive connections, but a client that opens a connection and sends
its headers a byte at a time holds it (and a slot of the server) for as long as it likes: the
slow-header attack. :func:`header_timeout_protocol` gives uvicorn's h11 protocol a timer armed
when a connection opens and again when it waits for its next request; it is disarmed once the
request's headers are complete, and when it fires the connection is answered 408 (if the
client sent anything) and closed. The body has its own deadline in the application
(:class:`sidecar.gateway.GatewayConfig.body_timeout`), where the ASGI events are.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has, by default, to send a request line and headers.
DEFAULT_HEADER_TIMEOUT = 10.0

_BODY = json.dumps(
    {"error": {"code": 408, "message": "request headers not received in time", "status": "DEADLINE_EXCEEDED"}}
).encode()
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_BODY)}\r\n\r\n".encode()
    + _BODY
)


class _HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers arrive too slowly."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    _header_timer: asyncio.TimerHandle | None = None
    _received = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection with the clock running for its first request's headers."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; stop the clock once the headers are complete."""
        self._received = True
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        """After each response the clock runs again for the next request (keep-alive)."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._received = False
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._received:
            self.transport.write(_408)
        self.transport.close()


def header_timeout_protocol(seconds: float = DEFAULT_HEADER_TIMEOUT) -> type[H11Protocol]:
    """uvicorn's ``http`` protocol class with a ``seconds`` deadline for each request's headers.

    Raises:
        ValueError: ``seconds`` is not positive.
    """
    if not seconds > 0:
        raise ValueError(f"header timeout must be positive, got {seconds}")
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout": float(seconds)})
