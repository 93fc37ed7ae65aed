"""What one call may do: its principal and the policy, asked about the row the call loads.

The interceptor authenticates a call and publishes its :class:`Access` for the call's
duration (:func:`current_access`); it never looks a backfill up. Whoever loads or
changes a backfill row (the ledger, inside the transaction that reads or locks it) asks
:meth:`Access.check` about that very row before acting, so that no backfill can appear
between the decision and the act.

A caller who may not read a backfill's DAG is answered exactly as for a backfill that
does not exist (:meth:`sidecar.errors.BackfillNotFound.of`); one who may read it but not
pause or cancel it gets ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from sidecar.auth._policy import Action, Policy
from sidecar.auth._tokens import Principal
from sidecar.errors import BackfillNotFound, PermissionDenied


@dataclass(frozen=True)
class Access:
    """A call's caller, the policy, and the action the call's method needs.

    ``action`` comes from :data:`sidecar.auth.METHOD_RULES`, the one table of which action
    each method needs; the ledger never picks an action itself.
    """

    principal: Principal | None
    """None when the server runs without authentication (every DAG action allowed)."""
    policy: Policy
    action: Action = Action.READ

    @classmethod
    def unrestricted(cls) -> Access:
        """Without authentication: no principal, every DAG action on every DAG."""
        return cls(None, Policy.allow_all())

    @property
    def owner(self) -> str:
        """The principal's name, scoping its request ids ("" without authentication)."""
        return self.principal.name if self.principal is not None else ""

    def allows(self, action: Action, dag_id: str) -> bool:
        """Whether the caller may do ``action`` to backfills of ``dag_id``."""
        return self.principal is None or self.policy.allows(self.principal, action, dag_id)

    def may_read(self, dag_id: str) -> bool:
        """Whether the caller may see backfills of ``dag_id`` (a listing's predicate)."""
        return self.allows(Action.READ, dag_id)

    def readable_globs(self) -> tuple[str, ...] | None:
        """The DAG globs the caller may read; None for every DAG (a listing needs no filter)."""
        if self.principal is None:
            return None
        globs = self.policy.globs(self.principal, Action.READ)
        return None if "*" in globs else globs

    def check(self, dag_id: str, backfill_id: int) -> None:
        """Authorise the call's action on the loaded backfill ``backfill_id`` of ``dag_id``.

        Raises:
            BackfillNotFound: the caller may not read the DAG (the answer for a missing backfill).
            PermissionDenied: the caller may read the DAG but not do the call's action to it.
        """
        if not self.may_read(dag_id):
            raise BackfillNotFound.of(backfill_id)
        if not self.allows(self.action, dag_id):
            raise PermissionDenied(f"{self.owner} may not {self.action.value} backfills of DAG {dag_id}")


_UNRESTRICTED = Access.unrestricted()
_access: contextvars.ContextVar[Access | None] = contextvars.ContextVar(
    "airflow_sidecar_access", default=None
)


def current_access() -> Access:
    """The access of the RPC being served (unrestricted when the server runs without authentication)."""
    return _access.get() or _UNRESTRICTED


def publish_access(access: Access) -> None:
    """Make ``access`` the current call's (the interceptor does, before the servicer runs)."""
    _access.set(access)
