"""OpenTelemetry traces: gRPC server spans with database spans beneath them.

The OpenTelemetry packages are the optional extra ``otel`` (Airflow's environment has
them already); they are imported only when tracing is on. Off unless an exporter is
configured with the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or a
tracer provider is handed in (tests). Incoming W3C ``traceparent`` metadata (from the
REST gateway or any instrumented client) continues the caller's trace.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

SERVICE_NAME = "airflow-sidecar"


def tracing_configured() -> bool:
    """Whether the environment names an OTLP endpoint."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup_tracing(provider: TracerProvider | None = None) -> TracerProvider | None:
    """Install a tracer provider: the one given, or an OTLP exporter when configured; else None."""
    if provider is None:
        if not tracing_configured():
            return None
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces over OTLP")
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    return provider


def server_interceptors(provider: TracerProvider | None) -> list[Any]:
    """The grpc.aio server interceptors that open a span per call (none when tracing is off)."""
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=provider)]  # type: ignore[no-untyped-call]


def instrument_database(engine: AsyncEngine, provider: TracerProvider | None) -> None:
    """Give each SQL statement a span under the current call's span."""
    if provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()  # a singleton: a new engine replaces the last one
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    # The instrumentation declares SQLAlchemy < 2.1 but uses only its stable event API.
    instrumentor.instrument(engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True)
