"""The sidecar's own secrets: the page-token key, created once and shared by every replica."""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._tables import sidecar_secret

__all__ = ["create_page_token_key", "page_token_key"]

_PAGE_TOKEN_KEY = "page_token_key"


def create_page_token_key(conn: Connection) -> None:
    """Store a fresh random 256-bit page-token key unless there is one (a migration step)."""
    found = conn.execute(sa.select(sidecar_secret.c.name).where(sidecar_secret.c.name == _PAGE_TOKEN_KEY))
    if found.first() is None:
        conn.execute(sidecar_secret.insert().values(name=_PAGE_TOKEN_KEY, value=secrets.token_hex(32)))


async def page_token_key(conn: AsyncConnection) -> bytes:
    """The page-token key (created by the migrations that :func:`sidecar.store.prepare` runs).

    Raises:
        RuntimeError: the database was not prepared.
    """
    value = await conn.scalar(
        sa.select(sidecar_secret.c.value).where(sidecar_secret.c.name == _PAGE_TOKEN_KEY)
    )
    if value is None:
        raise RuntimeError("no page-token key: the sidecar's migrations have not run on this database")
    return bytes.fromhex(value)
