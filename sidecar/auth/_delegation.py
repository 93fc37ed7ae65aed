"""Delegation: a trusted front door calls on behalf of a user it has already authenticated.

The Airflow plugin (:mod:`airflow_shim.plugin`) answers Airflow's own backfill routes after
Airflow's auth manager has authenticated and authorised the user; it then calls the sidecar
with its own token and names that user in the ``x-sidecar-on-behalf-of-bin`` metadata
(UTF-8). Only a
principal holding the role ``delegate`` may do so: the call then runs as that user (recorded
as the backfill's ``triggering_user_name``, rate-limited under that name) with the roles of
the delegate, so the policy grants a front door what it may do, whoever it speaks for. Anyone
else naming a user is refused, never silently served as themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sidecar.auth._tokens import Principal, _name_problem
from sidecar.names import ON_BEHALF_OF_METADATA

#: The role a principal must hold to call on behalf of another user.
DELEGATE_ROLE = "delegate"


class DelegationRefused(Exception):
    """``x-sidecar-on-behalf-of-bin`` from a caller that may not delegate, or naming an unusable user."""


def on_behalf_of(metadata: Iterable[tuple[str, Any]] | None) -> bytes | None:
    """The UTF-8 user name in the call's ``x-sidecar-on-behalf-of-bin`` metadata (None: not delegated)."""
    for key, value in metadata or ():
        if key == ON_BEHALF_OF_METADATA:
            return value.encode() if isinstance(value, str) else bytes(value)
    return None


def delegated(principal: Principal, named: bytes | None) -> Principal:
    """The principal a call runs as: the ``named`` user with the delegate's roles, or ``principal`` itself.

    Raises:
        DelegationRefused: a user is named but ``principal`` lacks the ``delegate`` role, or
            the name cannot be a triggering user (not UTF-8, empty, too long, control characters).
    """
    if named is None:
        return principal
    if DELEGATE_ROLE not in principal.roles:
        raise DelegationRefused(f"{principal.name} may not call on behalf of another user")
    try:
        user = named.decode("utf-8")
    except UnicodeDecodeError:
        raise DelegationRefused(f"{ON_BEHALF_OF_METADATA} is not UTF-8") from None
    problem = _name_problem(user, ON_BEHALF_OF_METADATA) if user else f"{ON_BEHALF_OF_METADATA} is empty"
    if problem is not None:
        raise DelegationRefused(problem)
    return Principal(name=user, roles=principal.roles, jti=principal.jti)
