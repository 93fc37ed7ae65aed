"""The sidecar's wire vocabulary: resource names and metadata keys, parsed and spelled in one place.

A leaf: it imports nothing of the sidecar, so the scheduler shim, the CLI, the gateway, the
authorisation interceptor and the API converter can all share it without loading the server.
"""

from __future__ import annotations

#: The collection of backfill resources: a backfill is named ``backfills/{id}``.
BACKFILLS = "backfills"
#: The largest backfill id (Airflow's ``backfill.id`` is a 32-bit ``INTEGER``).
MAX_BACKFILL_ID = 2**31 - 1
#: The gRPC metadata key carrying ``Bearer <token>`` (the gateway forwards HTTP Authorization).
AUTHORIZATION_METADATA = "authorization"


def backfill_name(backfill_id: int | str) -> str:
    """The resource name ``backfills/{id}`` of a backfill id."""
    return f"{BACKFILLS}/{backfill_id}"


def parse_backfill_name(name: str) -> int | None:
    """The id in a ``backfills/{id}`` resource name; None if ``name`` is not of that form.

    The id is ASCII digits only (no sign, no spaces, no other Unicode digits) and fits
    Airflow's 32-bit ``backfill.id``; the digit count is checked before converting, so a
    huge string is refused without parsing it.
    """
    prefix, _, rest = name.partition("/")
    if prefix != BACKFILLS or not (rest.isascii() and rest.isdigit()) or len(rest) > 10:
        return None
    backfill_id = int(rest)
    return backfill_id if backfill_id <= MAX_BACKFILL_ID else None


#: The gRPC metadata key naming the user a trusted front door calls on behalf of (delegation);
#: binary (``-bin``), so any user name travels as its UTF-8 bytes.
ON_BEHALF_OF_METADATA = "x-sidecar-on-behalf-of-bin"

#: The PostgreSQL schema of the sidecar's own tables (on SQLite: none). The store creates them
#: there, and the scheduler shim reads a backfill's priority and DAG cap from them.
SIDECAR_SCHEMA = "airflow_sidecar"
