"""``airflow-sidecar serve``: the grpc.aio server, its health service, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.api import BackfillServicer, SchedulerServicer
from sidecar.engine import BackfillEngine, EngineConfig
from sidecar.store import Database, connect, prepare

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    backfill_pb2.DESCRIPTOR.services_by_name["BackfillService"].full_name,
    scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
)


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and runs."""

    database_url: str
    """SQLAlchemy URL of Airflow's metadata database."""
    listen: str = "127.0.0.1:50051"
    """host:port; loopback unless set otherwise."""
    tick_interval: float = 5.0
    """Seconds between the server's own ticks (the shim ticks on every scheduler loop too)."""
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request or response message."""


class SidecarServer:
    """The running sidecar: database, engine, gRPC server and the background ticker."""

    def __init__(self, config: ServerConfig, engine_config: EngineConfig | None = None) -> None:
        self.config = config
        self._engine_config = engine_config
        self.db: Database | None = None
        self.engine: BackfillEngine | None = None
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        """Check the database, migrate the sidecar's tables and start serving.

        Raises:
            SchemaMismatch: not an Airflow 3.3 metadata database.
        """
        self.db = connect(self.config.database_url)
        await prepare(self.db)
        self.engine = BackfillEngine(self.db, self._engine_config)
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        backfill_pb2_grpc.add_BackfillServiceServicer_to_server(BackfillServicer(self.engine), server)
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(self.engine), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in (*SERVICE_NAMES, ""):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        self._ticker = asyncio.create_task(self._tick_forever(), name="sidecar-ticker")
        log.info("airflow-sidecar serving on %s (%s)", self.config.listen, self.db.dialect)

    async def _tick_forever(self) -> None:
        assert self.engine is not None
        while True:
            try:
                await self.engine.tick_soon()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick failed; retrying in %.1fs", self.config.tick_interval)
            await asyncio.sleep(self.config.tick_interval)

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish (each batch commits or rolls back), close."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            await self._server.stop(self.config.grace)
        if self.db is not None:
            await self.db.dispose()
        log.info("airflow-sidecar stopped")

    async def wait(self) -> None:
        """Wait until the gRPC server terminates."""
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = SidecarServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
