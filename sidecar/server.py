"""``airflow-sidecar serve``: the grpc.aio server, its health service, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2, backfill_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sidecar.api import BackfillServicer, ErrorBoundary, SchedulerServicer
from sidecar.api._limits import RateLimiter
from sidecar.auth import (
    build_interceptor,
    check_auth,
    server_credentials,
)
from sidecar.config import ServerSettings
from sidecar.engine import BackfillEngine, EngineConfig, settle_heap
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


#: Seconds between passes of the event recorder and webhook sender.
NOTIFY_INTERVAL = 1.0

#: The name embedders and tests use for the server's settings (one class: ``sidecar.config``).
ServerConfig = ServerSettings


class SidecarServer:
    """The running sidecar: database, engine, gRPC server and the background ticker."""

    def __init__(
        self, config: ServerSettings, engine_config: EngineConfig | None = None, *, notifier: bool = True
    ) -> None:
        """``notifier``: run the event recorder and webhook sender (``serve`` always does).

        Off only for in-process test servers that must keep the process quiet: property tests
        whose strategies draw in another thread beside the server's background passes.
        """
        self.config = config
        self._engine_config = engine_config
        self._run_notifier = notifier
        self.db: Database | None = None
        self.engine: BackfillEngine | None = None
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._notifier: asyncio.Task[None] | None = None
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
        interceptor = build_interceptor(self.config.auth, self._token_revoked)
        credentials = server_credentials(self.config.tls) if self.config.tls else None
        self.db = connect(self.config.database_url)
        await prepare(self.db)
        engine_config = dataclasses.replace(
            self._engine_config or EngineConfig(),
            planning_workers=self.config.planning_workers,
            planning_cpu_seconds=self.config.planning_cpu_seconds,
            rerun_with_latest_version=self.config.rerun_with_latest_version,
            webhooks=self.config.webhooks,
        )
        self.engine = BackfillEngine(self.db, engine_config)
        try:  # the first create then finds its statements compiled and prepared (issue 14)
            await self.engine.warm_up()
        except Exception:  # best effort: a create still works, only slower the first time
            log.warning("warming up the create path failed; the first create pays for it", exc_info=True)
        tracer_provider = setup_tracing()
        instrument_database(self.db.engine, tracer_provider)
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            # gRPC shares a bound port by default (SO_REUSEPORT): a second server would then
            # silently take half the calls. One port, one server.
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(
            options=options,
            interceptors=[
                ErrorBoundary(),  # outermost: no exception text or decoding error reaches a caller
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
                dry_run_limiter=RateLimiter(
                    rate_per_minute=self.config.dry_runs_per_minute, burst=self.config.dry_run_burst
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
        self.port = _bind(server, self.config.listen, credentials)
        if self.config.ops_listen:
            host, _, port = self.config.ops_listen.rpartition(":")
            ops = OpsServer(host or "127.0.0.1", int(port), self.engine.database_ready)
            try:
                await ops.start()
            except OSError as exc:
                raise ValueError(
                    f"cannot listen on --ops-listen {self.config.ops_listen}: {exc.strerror or exc}"
                ) from exc
            self._ops = ops
            self.ops_port = ops.port
        await server.start()  # after every port is bound: a refused start serves nothing
        self._server = server
        self._ticker = asyncio.create_task(self._tick_forever(), name="sidecar-ticker")
        if self._run_notifier:
            self._notifier = asyncio.create_task(self._notify_forever(), name="sidecar-notifier")
        log.info("airflow-sidecar serving on %s (%s)", self.config.listen, self.db.dialect)

    async def _token_revoked(self, jti: str) -> bool:
        """Whether Airflow revoked this JWT (its logout writes the ``jti`` to ``revoked_token``)."""
        return self.db is not None and await token_revoked(self.db, jti)

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

    async def _notify_forever(self) -> None:
        """Record backfill events and deliver webhooks, one pass a second (``Notifier.run_once``)."""
        assert self.engine is not None
        while True:
            try:
                await self.engine.notifier.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "recording or delivering backfill events failed; retrying in %.1fs", NOTIFY_INTERVAL
                )
            await asyncio.sleep(NOTIFY_INTERVAL)

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish (each batch commits or rolls back), close."""
        for task in (self._ticker, self._notifier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            await self._server.stop(self.config.grace)
        if self._ops is not None:
            await self._ops.stop()
        if self.engine is not None:
            await self.engine.close()
        if self.db is not None:
            await self.db.dispose()
        if self._server is not None:  # a start that failed has said why already
            log.info("airflow-sidecar stopped")

    async def wait(self) -> None:
        """Wait until the gRPC server terminates."""
        if self._server is not None:
            await self._server.wait_for_termination()


def _in_use_error(listen: str) -> ValueError:
    return ValueError(
        f"cannot listen on {listen}: the address is in use (another sidecar?) or not on this host; "
        "stop the other process or choose another --listen"
    )


def _refuse_if_in_use(listen: str) -> None:
    """Fail on a port another process listens on before gRPC tries (and logs its own lines to stderr).

    gRPC's own bind (with ``so_reuseport`` off) remains the real guard; this only makes the
    common case one clean line.

    Raises:
        ValueError: some address ``listen`` resolves to is in use.
    """
    host, _, port = listen.rpartition(":")
    if not (port.isascii() and port.isdigit()) or int(port) == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return  # gRPC reports a name it cannot resolve
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no owner
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise _in_use_error(listen) from None


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``listen`` (with ``so_reuseport`` off, a port in use fails here) and return the port.

    Raises:
        ValueError: the address is in use or not this host's (one line).
    """
    _refuse_if_in_use(listen)
    try:
        if credentials is not None:
            port = server.add_secure_port(listen, credentials)
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:  # grpcio >= 1.60 raises where older versions returned 0
        port = 0
    if port == 0:
        raise _in_use_error(listen)
    return port


async def serve(config: ServerSettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    Raises:
        ValueError: the server cannot start as configured (one line; nothing is left running).
        SchemaMismatch: not an Airflow 3.3 metadata database.
    """
    server = SidecarServer(config)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    settle_heap()  # the process's own server, warmed up: what start-up made stays (not in start(): tests)
    if config.port_file is not None:  # written once serving, atomically: a reader never sees half
        partial = config.port_file.with_name(config.port_file.name + ".partial")
        partial.write_text(f"{server.port}\n")
        partial.replace(config.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
