"""Airflow's token revocation, read from its ``revoked_token`` table.

Airflow's API server writes a token's ``jti`` there on logout and refuses the token from
then on; the sidecar reads the same table, so a logged-out token stops working here too.
The auth layer sees this only as a ``RevocationCheck`` callable that the server binds to
its database (``sidecar.auth`` never imports the store).
"""

from __future__ import annotations

import sqlalchemy as sa

from sidecar.store._database import Database

_REVOKED = sa.text("SELECT 1 FROM revoked_token WHERE jti = :jti")


async def token_revoked(db: Database, jti: str) -> bool:
    """Whether Airflow has revoked the JWT with this ``jti`` (its column holds 32 characters)."""
    async with db.engine.connect() as conn:
        return (await conn.execute(_REVOKED, {"jti": jti[:32]})).first() is not None
