"""The gRPC API: servicers and the error mapping."""

from sidecar.api._errors import status_code_for, to_status
from sidecar.api._servicer import BackfillServicer, SchedulerServicer

__all__ = ["BackfillServicer", "SchedulerServicer", "status_code_for", "to_status"]
