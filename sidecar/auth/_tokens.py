"""Who is calling: bearer tokens turned into a :class:`Principal`.

Two kinds of token are accepted, both sent as ``authorization: Bearer <token>``:

* JWTs signed with the configured secret, exactly as Airflow 3.3's API server issues them
  when ``[api_auth] jwt_secret`` is shared (HS512, ``aud`` = ``apache-airflow``, ``sub`` the
  user, ``role`` the Simple auth manager's role), and HS256 tokens signed with the same
  secret by scripts. ``sub`` is the principal; ``role`` (a string or a list) and ``roles``
  give its roles.
* Static tokens of service accounts from a TOML file that holds only their SHA-256 hashes::

      [[token]]
      sha256 = "9f86d081884c7d65..."   # printf %s "$TOKEN" | sha256sum
      principal = "airflow-scheduler"
      roles = ["scheduler"]

  A presented token is hashed once and compared with every entry in constant time, so
  neither timing nor the file gives a token away.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from sidecar.auth._reasons import TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_MISSING
from sidecar.config import AIRFLOW_AUDIENCE

#: HS512 is what Airflow signs with a shared secret; HS256 is what most scripts produce.
JWT_ALGORITHMS = ("HS512", "HS256")
#: Claims every accepted JWT must carry (Airflow also requires ``iat`` and ``nbf`` of its own).
REQUIRED_CLAIMS = ("exp", "sub")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    """The JWT ``sub`` or the static token's ``principal``; recorded as the triggering user."""
    roles: frozenset[str] = field(default_factory=frozenset)
    """Roles the policy can grant rights to (``scheduler`` may call Tick)."""
    jti: str | None = field(default=None, compare=False)
    """The JWT's id, checked against Airflow's revoked tokens; None for static tokens."""


class AuthenticationError(Exception):
    """The call carries no usable token; ``reason`` is one of the ``TOKEN_*`` constants."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class StaticToken:
    """One service-account token of the token file, by the SHA-256 of the token."""

    digest: bytes
    principal: Principal


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token, as the token file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def _roles(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(r, str) for r in value):
        return frozenset(value)
    raise ValueError(f"{where}: roles must be a string or a list of strings")


def load_token_file(path: Path) -> list[StaticToken]:
    """Read the static tokens of a TOML token file.

    Raises:
        ValueError: the file is missing, not TOML, or an entry is malformed (one line, naming it).
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"token file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"token file {path}: not valid TOML: {exc}") from exc
    entries = data.get("token", [])
    unknown = set(data) - {"token"}
    if unknown or not isinstance(entries, list):
        raise ValueError(f"token file {path}: expected only [[token]] tables, found {sorted(unknown)}")
    tokens: list[StaticToken] = []
    for number, entry in enumerate(entries, 1):
        where = f"token file {path}, token #{number}"
        digest, name = entry.get("sha256"), entry.get("principal")
        extra = set(entry) - {"sha256", "principal", "roles"}
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: principal must be a non-empty string")
        try:
            raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ValueError(f"{where}: sha256 must be 64 hex digits (the SHA-256 of the token)")
        tokens.append(StaticToken(raw, Principal(name, _roles(entry.get("roles"), where))))
    return tokens


class Authenticator:
    """Turns the ``authorization`` metadata value into a :class:`Principal`.

    Args:
        jwt_secret: the secret shared with Airflow's API server; None accepts no JWT.
        static_tokens: service-account tokens (see :func:`load_token_file`).
        audience: the required ``aud`` claim (Airflow's ``[api_auth] jwt_audience``).
        issuer: the required ``iss`` claim, if Airflow is configured with one.
        leeway: seconds of clock skew allowed on ``exp``/``nbf`` (Airflow's default is 10).
    """

    def __init__(
        self,
        *,
        jwt_secret: str | None = None,
        static_tokens: Iterable[StaticToken] = (),
        audience: str = AIRFLOW_AUDIENCE,
        issuer: str | None = None,
        leeway: float = 10.0,
    ) -> None:
        self._secret = jwt_secret
        self._static = list(static_tokens)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request whose ``authorization`` metadata is ``authorization``.

        Raises:
            AuthenticationError: missing, expired or invalid token.
        """
        if not authorization:
            raise AuthenticationError(TOKEN_MISSING, "missing bearer token (metadata authorization)")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(TOKEN_MISSING, "authorization must be 'Bearer <token>'")
        static = self._match_static(token)
        if static is not None:
            return static
        if self._secret is not None and token.count(".") == 2:
            return self._decode_jwt(token)
        raise AuthenticationError(TOKEN_INVALID, "invalid token")

    def _match_static(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._static:  # no early exit: every entry costs the same
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found

    def _decode_jwt(self, token: str) -> Principal:
        assert self._secret is not None
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=list(JWT_ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": [*REQUIRED_CLAIMS, "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError(TOKEN_EXPIRED, "token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(TOKEN_INVALID, f"invalid token: {exc}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(TOKEN_INVALID, "invalid token: sub must be a non-empty string")
        try:
            roles = _roles(claims.get("role"), "role claim") | _roles(claims.get("roles"), "roles claim")
        except ValueError as exc:
            raise AuthenticationError(TOKEN_INVALID, f"invalid token: {exc}") from exc
        jti = claims.get("jti")
        return Principal(subject, roles, jti if isinstance(jti, str) and jti else None)
