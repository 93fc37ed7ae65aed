"""The authorisation table: for every RPC, the action it performs and where its DAG is named.

The contract test (``tests/unit/test_contract.py``) asserts that every RPC of the generated
descriptors has a row here; a method without one is refused by the interceptor, so a new
RPC is closed until someone decides who may call it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sidecar.auth._policy import Action


class Target(enum.Enum):
    """Where the DAG a call acts on comes from."""

    DAG_ID = "dag_id"
    """A field of the request holds the DAG id (create)."""
    BACKFILL = "backfill"
    """A field holds a backfill's resource name; the ledger authorises the row it loads."""
    LISTING = "listing"
    """An optional ``dag_id`` filter; without one, the engine lists only DAGs the caller may read."""
    NONE = "none"
    """No DAG: the action is checked on its own (Tick)."""


@dataclass(frozen=True)
class MethodRule:
    """How one RPC is authorised."""

    action: Action
    target: Target
    field: str = ""
    """Dotted path of the request field naming the DAG or the backfill."""


_BACKFILL = "/airflow_sidecar.v1.BackfillService/"
_SCHEDULER = "/airflow_sidecar.v1.SchedulerService/"

#: Full gRPC method name -> how it is authorised.
METHOD_RULES: dict[str, MethodRule] = {
    _BACKFILL + "CreateBackfill": MethodRule(Action.CREATE, Target.DAG_ID, "backfill.dag_id"),
    _BACKFILL + "GetBackfill": MethodRule(Action.READ, Target.BACKFILL, "name"),
    _BACKFILL + "ListBackfills": MethodRule(Action.READ, Target.LISTING, "dag_id"),
    _BACKFILL + "PauseBackfill": MethodRule(Action.PAUSE, Target.BACKFILL, "name"),
    _BACKFILL + "UnpauseBackfill": MethodRule(Action.PAUSE, Target.BACKFILL, "name"),
    _BACKFILL + "CancelBackfill": MethodRule(Action.CANCEL, Target.BACKFILL, "name"),
    _BACKFILL + "ListBackfillRuns": MethodRule(Action.READ, Target.BACKFILL, "parent"),
    _BACKFILL + "WatchBackfill": MethodRule(Action.READ, Target.BACKFILL, "name"),
    _SCHEDULER + "Tick": MethodRule(Action.TICK, Target.NONE),
}

#: Open to anyone: load balancers and orchestrators probe health without credentials.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)
#: Any authenticated caller: the schema is no secret, but strangers need not map the API.
AUTHENTICATED_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
