"""``airflow-sidecar serve``: the grpc.aio server, its health service, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.api import BackfillServicer, SchedulerServicer
from sidecar.api._limits import RateLimiter
from sidecar.auth import (
    AuthConfig,
    TlsConfig,
    build_interceptor,
    check_auth,
    server_credentials,
)
from sidecar.engine import BackfillEngine, EngineConfig
from sidecar.errors import SidecarError
from sidecar.observability import (
    OpsServer,
    instrument_database,
    server_interceptors,
    set_backfill_counts,
    set_queue_depths,
    setup_tracing,
)
from sidecar.observability._grpc import MetricsInterceptor
from sidecar.store import Database, connect, prepare, token_revoked

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
    auth: AuthConfig = field(default_factory=AuthConfig)
    """Who may call; the default (nothing configured) is refused at start: secure by default."""
    tls: TlsConfig | None = None
    """TLS (and mutual TLS) on the gRPC port; None = plaintext."""
    ops_listen: str | None = None
    """host:port of the operator endpoint (/metrics, /healthz, /readyz); None: off."""
    writes_per_minute: float = 60.0
    """Sustained create/pause/unpause/cancel calls per principal and minute; 0: unlimited."""
    write_burst: int = 20
    """Such calls a principal may make at once."""


class SidecarServer:
    """The running sidecar: database, engine, gRPC server and the background ticker."""

    def __init__(self, config: ServerConfig, engine_config: EngineConfig | None = None) -> None:
        self.config = config
        self._engine_config = engine_config
        self.db: Database | None = None
        self.engine: BackfillEngine | None = None
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ops: OpsServer | None = None
        self.port = 0
        self.ops_port = 0

    async def start(self) -> None:
        """Check the database, migrate the sidecar's tables and start serving.

        Raises:
            SchemaMismatch: not an Airflow 3.3 metadata database.
            ValueError: no authentication configured, ``no_auth`` off loopback, or a bad
                token, policy or certificate file (one line saying what to fix).
        """
        check_auth(self.config.auth, self.config.listen)
        interceptor = build_interceptor(self.config.auth, self._dag_of_backfill, self._token_revoked)
        credentials = server_credentials(self.config.tls) if self.config.tls else None
        self.db = connect(self.config.database_url)
        await prepare(self.db)
        self.engine = BackfillEngine(self.db, self._engine_config)
        tracer_provider = setup_tracing()
        instrument_database(self.db.engine, tracer_provider)
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
        ]
        server = grpc.aio.server(
            options=options,
            interceptors=[
                *server_interceptors(tracer_provider),
                MetricsInterceptor(),
                *([interceptor] if interceptor else []),  # innermost: metrics see refused calls
            ],
        )
        backfill_pb2_grpc.add_BackfillServiceServicer_to_server(
            BackfillServicer(
                self.engine,
                limiter=RateLimiter(
                    rate_per_minute=self.config.writes_per_minute, burst=self.config.write_burst
                ),
            ),
            server,
        )
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(self.engine), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in (*SERVICE_NAMES, ""):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
        if credentials is not None:
            self.port = server.add_secure_port(self.config.listen, credentials)
        else:
            self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        if self.config.ops_listen:
            host, _, port = self.config.ops_listen.rpartition(":")
            self._ops = OpsServer(host or "127.0.0.1", int(port), self.engine.database_ready)
            await self._ops.start()
            self.ops_port = self._ops.port
        self._ticker = asyncio.create_task(self._tick_forever(), name="sidecar-ticker")
        log.info("airflow-sidecar serving on %s (%s)", self.config.listen, self.db.dialect)

    async def _token_revoked(self, jti: str) -> bool:
        """Whether Airflow revoked this JWT (its logout writes the ``jti`` to ``revoked_token``)."""
        return self.db is not None and await token_revoked(self.db, jti)

    async def _dag_of_backfill(self, name: str) -> str | None:
        """The DAG of a ``backfills/{id}`` name, for authorisation; None if there is none."""
        prefix, _, rest = name.partition("/")
        if (
            self.engine is None
            or prefix != "backfills"
            or not (rest.isascii() and rest.isdigit())
            or len(rest) > 10
        ):
            return None
        if int(rest) > 2**31 - 1:  # not a backfill id: the servicer answers INVALID_ARGUMENT
            return None
        try:
            return (await self.engine.get(int(rest))).dag_id
        except SidecarError:
            return None

    async def _tick_forever(self) -> None:
        assert self.engine is not None
        while True:
            try:
                await self.engine.tick_soon()
                if self._ops is not None:
                    counts, depths = await self.engine.stats()
                    set_backfill_counts(counts)
                    set_queue_depths(depths)
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
        if self._ops is not None:
            await self._ops.stop()
        if self.engine is not None:
            await self.engine.close()
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
