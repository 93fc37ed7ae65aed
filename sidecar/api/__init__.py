"""The gRPC API: servicers, the error mapping and the interceptor that keeps internals in."""

from sidecar.api._errors import ErrorBoundary, status_code_for, to_status
from sidecar.api._servicer import BackfillServicer, SchedulerServicer

__all__ = ["BackfillServicer", "ErrorBoundary", "SchedulerServicer", "status_code_for", "to_status"]
