"""How the server is locked: authentication, authorisation and TLS settings, checked up front.

Secure by default: with no JWT secret, no token file and no explicit ``no_auth`` the server
refuses to start; ``no_auth`` is refused on an address other than loopback; a JWT secret
shorter than HS512's key size is refused unless ``allow_weak_jwt_secret`` says otherwise.
The settings themselves (:class:`AuthConfig`, :class:`TlsConfig`) live in ``sidecar.config``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from sidecar.auth._interceptor import AuthInterceptor
from sidecar.auth._policy import Policy, load_policy
from sidecar.auth._revocation import RevocationCheck
from sidecar.auth._tokens import Authenticator, StaticToken, load_token_file
from sidecar.config import AuthConfig, TlsConfig
from sidecar.vocabulary import counted

__all__ = [
    "MIN_JWT_SECRET_BYTES",
    "AuthConfig",
    "TlsConfig",
    "build_interceptor",
    "check_auth",
    "check_jwt_secret",
    "is_loopback",
    "server_credentials",
]

#: The shortest secret each HMAC algorithm may use: its hash's output size (RFC 7518 section 3.2).
MIN_JWT_SECRET_BYTES = {"HS256": 32, "HS512": 64}


def is_loopback(listen: str) -> bool:
    """Whether a ``host:port`` listen address is reachable only from this machine."""
    host = listen.rpartition(":")[0] if ":" in listen else listen
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth(config: AuthConfig, listen: str) -> None:
    """Refuse an unlocked or contradictory configuration before anything starts.

    Raises:
        ValueError: one line saying what to configure.
    """
    if config.no_auth:
        if config.jwt_secret or config.token_file or config.policy_file:
            raise ValueError("--no-auth cannot be combined with --jwt-secret, --token-file or --policy")
        if not is_loopback(listen):
            raise ValueError(
                f"--no-auth is refused on non-loopback address {listen}; configure authentication"
            )
        return
    if not config.jwt_secret and config.token_file is None:
        raise ValueError(
            "no authentication configured: set --jwt-secret (or SIDECAR_JWT_SECRET) and/or --token-file, "
            "or --no-auth for local development on loopback"
        )
    if config.jwt_secret and not config.allow_weak_jwt_secret:
        # The server verifies HS512 (what Airflow signs with), so the secret must suit HS512.
        check_jwt_secret(config.jwt_secret, "HS512")


def check_jwt_secret(secret: str, algorithm: str) -> None:
    """Refuse a secret shorter than ``algorithm``'s key size (RFC 7518 section 3.2).

    A short HMAC secret can be brute-forced offline from any one token it signed, after
    which anyone can mint tokens for any principal.

    Raises:
        ValueError: one line saying how long the secret must be and how to make one.
    """
    needed = MIN_JWT_SECRET_BYTES[algorithm]
    length = len(secret.encode())
    if length < needed:
        raise ValueError(
            f"the JWT secret is {counted(length, 'byte')}; {algorithm} needs at least {needed} (RFC 7518 3.2): "
            f"set Airflow's [api_auth] jwt_secret and SIDECAR_JWT_SECRET to e.g. `openssl rand -hex {needed // 2}`, "
            "or pass --allow-weak-jwt-secret (tests only)"
        )


def build_interceptor(
    config: AuthConfig, is_revoked: RevocationCheck | None = None
) -> AuthInterceptor | None:
    """The interceptor for ``config`` (None with ``no_auth``), its files read and checked.

    Raises:
        ValueError: a token or policy file is unreadable or malformed.
    """
    if config.no_auth:
        return None
    static: list[StaticToken] = load_token_file(config.token_file) if config.token_file else []
    policy = load_policy(config.policy_file) if config.policy_file else Policy.allow_all()
    authenticator = Authenticator(
        jwt_secret=config.jwt_secret or None,
        static_tokens=static,
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
        leeway=config.jwt_leeway,
    )
    return AuthInterceptor(authenticator, policy, is_revoked)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from exc


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """gRPC server credentials for ``tls``; client certificates required when it has a CA.

    Raises:
        ValueError: a certificate or key file cannot be read.
    """
    cert, key = _read(tls.cert, "--tls-cert"), _read(tls.key, "--tls-key")
    client_ca = _read(tls.client_ca, "--tls-client-ca") if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
