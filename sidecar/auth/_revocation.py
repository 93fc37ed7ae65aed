"""Token revocation as a seam: the interceptor asks a callable whether a JWT id was revoked.

Airflow's API server writes a token's ``jti`` to its ``revoked_token`` table on logout and
refuses the token from then on; the sidecar must refuse it too. Reading that table is the
store's business (``sidecar.store.token_revoked``); the server binds it to its database
and hands the bound check to :func:`sidecar.auth.build_interceptor`. Auth itself never
imports the store, so a client of the sidecar (the shim inside Airflow's scheduler) that
imports ``sidecar.auth`` loads no database code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

#: Whether the JWT with this ``jti`` was revoked (Airflow's logout). An exception means
#: "cannot tell": the interceptor then refuses the call with ``UNAVAILABLE`` (fail closed).
RevocationCheck = Callable[[str], Awaitable[bool]]
