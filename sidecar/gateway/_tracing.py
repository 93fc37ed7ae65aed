"""W3C trace context from an HTTP request to the gRPC calls it makes.

Without tracing configured in the gateway, an incoming ``traceparent``/``tracestate`` is
passed through unchanged, so the sidecar's server span joins the caller's trace. With
tracing configured (``OTEL_EXPORTER_OTLP_ENDPOINT``, the ``otel`` extra), the gateway
opens its own span per request under the caller's context and hands its own context on:
gateway -> gRPC -> database in one trace.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, MutableMapping
from typing import Any

_TRACE_HEADERS = ("traceparent", "tracestate")
_OUTGOING: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "gateway_trace_metadata", default=()
)


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The trace metadata to send with the gRPC calls of the current request."""
    return _OUTGOING.get()


def _incoming(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in _TRACE_HEADERS:
            value = raw_value.decode("latin-1")
            # Metadata must be printable ASCII; a malformed header is dropped, never forwarded.
            if value.isascii() and value.isprintable() and len(value) <= 512:
                found[name] = value
    return found


@contextlib.contextmanager
def request_trace(scope: MutableMapping[str, Any], tracer_provider: Any | None) -> Iterator[None]:
    """Within the block, :func:`trace_metadata` carries the request's trace context."""
    incoming = _incoming(scope.get("headers", []))
    if tracer_provider is None:
        token = _OUTGOING.set(tuple(incoming.items()))
        try:
            yield
        finally:
            _OUTGOING.reset(token)
        return
    from opentelemetry import propagate, trace

    parent = propagate.extract(incoming)
    tracer = tracer_provider.get_tracer("airflow-sidecar.gateway")
    name = f"{scope.get('method', 'HTTP')} {scope.get('path', '')}"
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER) as span:
        span.set_attribute("http.request.method", str(scope.get("method", "")))
        span.set_attribute("url.path", str(scope.get("path", "")))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        token = _OUTGOING.set(tuple((k, v) for k, v in carrier.items() if k in _TRACE_HEADERS))
        try:
            yield
        finally:
            _OUTGOING.reset(token)
