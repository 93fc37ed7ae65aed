"""A loopback TCP proxy that injects network faults on command: drops, latency, refusals.

Put between the sidecar and PostgreSQL, :meth:`TcpProxy.drop_all` cuts every open
connection mid-stream (the database sees the client vanish, the sidecar sees a broken
connection in the middle of a batch). Put between the shim and the sidecar, ``delay``
adds latency to every chunk forwarded and ``refuse`` closes new connections at once.

It runs an asyncio loop in a daemon thread so that synchronous tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        """Seconds added before forwarding each chunk, in both directions."""
        self.refuse = False
        """Close new connections at once (the upstream looks down)."""
        self.port = 0
        self.drops = 0
        """Connections cut by :meth:`drop_all` so far."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        """Listen on a free loopback port (``self.port``) and start forwarding."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_all(self) -> int:
        """Cut every open connection now (both sides see a reset); return how many."""

        async def _drop() -> int:
            writers = list(self._writers)
            for writer in writers:
                transport = writer.transport
                with contextlib.suppress(Exception):
                    transport.abort()
            self._writers.clear()
            return len(writers) // 2

        dropped = asyncio.run_coroutine_threadsafe(_drop(), self._loop).result(10)
        self.drops += dropped
        return dropped

    def open_connections(self) -> int:
        """Client connections open right now."""
        return len(self._writers) // 2

    def stop(self) -> None:
        """Close the listener and every connection, and stop the thread."""

        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                with contextlib.suppress(Exception):
                    writer.transport.abort()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@contextlib.contextmanager
def tcp_proxy(upstream_host: str, upstream_port: int) -> Iterator[TcpProxy]:
    """A started :class:`TcpProxy` for the length of a ``with`` block."""
    proxy = TcpProxy(upstream_host, upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
