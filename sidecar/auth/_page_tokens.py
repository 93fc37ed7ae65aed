"""Opaque page tokens: a position, encrypted and authenticated, bound to its listing and caller.

A token reveals nothing (not even the id of a backfill the caller cannot read), cannot be
forged or altered, and is refused for another listing or another principal. The
construction uses the standard library only (the sidecar has no crypto dependency)::

    token = base64url(version || nonce(16) || position XOR keystream(8) || tag(16))
    keystream = HMAC-SHA256(enc_key, "keystream" || nonce)[:8]
    tag = HMAC-SHA256(mac_key, version || nonce || ciphertext || context)[:16]

``enc_key`` and ``mac_key`` are derived from one random key that the ledger keeps in the
sidecar's own table, so every replica issues and accepts the same tokens. Encrypt then
MAC, with a fresh random nonce per token and keys used for one purpose each.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from sidecar.errors import InvalidArgument

__all__ = ["PageTokens"]

_VERSION = b"\x01"
_NONCE = 16
_VALUE = 8
_TAG = 16
_LENGTH = len(_VERSION) + _NONCE + _VALUE + _TAG
#: Positions are backfill ids or sort ordinals: 32-bit integer columns.
_MAX_POSITION = 2**31 - 1


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, b"airflow-sidecar page token " + purpose, hashlib.sha256).digest()


class PageTokens:
    """Issues and reads page tokens under one key.

    Args:
        key: at least 32 random bytes (the ledger's page-token key).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a page-token key needs at least 32 bytes")
        self._enc = _derive(key, b"encryption")
        self._mac = _derive(key, b"authentication")

    @staticmethod
    def context(*parts: str | int | None) -> bytes:
        """An unambiguous encoding of what a token is bound to (listing, filters, principal)."""
        return json.dumps(list(parts), separators=(",", ":")).encode()

    def _keystream(self, nonce: bytes) -> bytes:
        return hmac.new(self._enc, b"keystream" + nonce, hashlib.sha256).digest()[:_VALUE]

    def _tag(self, nonce: bytes, sealed: bytes, context: bytes) -> bytes:
        return hmac.new(self._mac, _VERSION + nonce + sealed + context, hashlib.sha256).digest()[:_TAG]

    def issue(self, position: int, context: bytes) -> str:
        """A token for ``position`` in the listing described by ``context``."""
        if not 0 <= position <= _MAX_POSITION:
            raise ValueError(f"position {position} out of range")
        nonce = secrets.token_bytes(_NONCE)
        clear = position.to_bytes(_VALUE, "big")
        sealed = bytes(a ^ b for a, b in zip(clear, self._keystream(nonce), strict=True))
        raw = _VERSION + nonce + sealed + self._tag(nonce, sealed, context)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def read(self, token: str, context: bytes) -> int | None:
        """The position of ``token`` (None for an empty token).

        Raises:
            InvalidArgument: field ``page_token``: not a token this sidecar issued for this
                listing and this caller (tampered, foreign, or from another listing).
        """
        if not token:
            return None
        invalid = InvalidArgument("page_token is not valid", field="page_token")
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise invalid from None
        if len(raw) != _LENGTH or raw[:1] != _VERSION:
            raise invalid
        nonce, sealed, tag = raw[1 : 1 + _NONCE], raw[1 + _NONCE : -_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(nonce, sealed, context)):
            raise invalid
        position = int.from_bytes(bytes(a ^ b for a, b in zip(sealed, self._keystream(nonce), strict=True)))
        if position > _MAX_POSITION:
            raise invalid
        return position
