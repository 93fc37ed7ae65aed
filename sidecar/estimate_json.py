"""A backfill's estimate (``Backfill.estimate``) as plain JSON: one shape for every front door.

The CLI's dry-run summary (``--output json``) and Airflow's ``/api/v2`` response (a sidecar
extension) print the same object. Above the leaves, beside ``sidecar.channel``: it reads the
generated messages and nothing else of the sidecar, so the gateway (and the Airflow plugin
through it) can import it without loading the server.
"""

from __future__ import annotations

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb

__all__ = ["estimate_dict"]


def estimate_dict(e: pb.Estimate) -> dict[str, object]:
    """The estimate's fields, durations in seconds (``remaining_p50_seconds``: 300.0).

    While the plan is still being counted (``plan_is_counting``) the runs left and the time
    left are not known: ``runs_remaining`` and ``remaining_*_seconds`` are null, not 0.
    """
    counting = e.plan_is_counting
    return {
        "basis": e.basis,
        "sample_size": e.sample_size,
        "run_duration_p50_seconds": e.run_duration_p50.ToTimedelta().total_seconds(),
        "run_duration_p90_seconds": e.run_duration_p90.ToTimedelta().total_seconds(),
        "runs_remaining": None if counting else e.runs_remaining,
        "remaining_p50_seconds": None if counting else e.remaining_p50.ToTimedelta().total_seconds(),
        "remaining_p90_seconds": None if counting else e.remaining_p90.ToTimedelta().total_seconds(),
        "plan_is_counting": counting,
    }
