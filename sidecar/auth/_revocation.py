"""Airflow's token revocation: a JWT whose ``jti`` is in ``revoked_token`` is refused.

Airflow's API server writes a token's ``jti`` there on logout and refuses it from then on;
the sidecar reads the same table, so a logged-out token stops working here too.
"""

from __future__ import annotations

import sqlalchemy as sa

from sidecar.store import Database

_REVOKED = sa.text("SELECT 1 FROM revoked_token WHERE jti = :jti")


async def token_revoked(db: Database, jti: str) -> bool:
    """Whether Airflow has revoked the JWT with this ``jti``."""
    async with db.engine.connect() as conn:
        return (await conn.execute(_REVOKED, {"jti": jti[:32]})).first() is not None
