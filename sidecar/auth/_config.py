"""How the server is locked: authentication, authorisation and TLS settings, checked up front.

Secure by default: with no JWT secret, no token file and no explicit ``no_auth`` the server
refuses to start, and ``no_auth`` is refused on an address other than loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

from sidecar.auth._interceptor import AuthInterceptor, DagResolver
from sidecar.auth._policy import Policy, load_policy
from sidecar.auth._revocation import RevocationCheck
from sidecar.auth._tokens import AIRFLOW_AUDIENCE, Authenticator, StaticToken, load_token_file


@dataclass(frozen=True)
class AuthConfig:
    """Who may call the server, and what they may do."""

    jwt_secret: str | None = None
    """Secret shared with Airflow's ``[api_auth] jwt_secret``; accepts HS512 and HS256 JWTs."""
    token_file: Path | None = None
    """TOML file of service-account tokens, by SHA-256 (see ``sidecar.auth._tokens``)."""
    policy_file: Path | None = None
    """TOML policy; None lets every authenticated caller do every DAG action."""
    jwt_audience: str = AIRFLOW_AUDIENCE
    """Required ``aud`` claim (Airflow's ``[api_auth] jwt_audience``)."""
    jwt_issuer: str | None = None
    """Required ``iss`` claim, when Airflow sets ``[api_auth] jwt_issuer``."""
    jwt_leeway: float = 10.0
    """Seconds of clock skew allowed (Airflow's ``[api_auth] jwt_leeway`` default)."""
    no_auth: bool = False
    """Serve without authentication: local development only, loopback only."""


@dataclass(frozen=True)
class TlsConfig:
    """TLS on the gRPC port; with ``client_ca``, mutual TLS (clients must present a certificate)."""

    cert: Path
    """PEM certificate chain of the server."""
    key: Path
    """PEM private key of the server."""
    client_ca: Path | None = None
    """PEM CA bundle that client certificates must chain to; None = server-side TLS only."""


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


def build_interceptor(
    config: AuthConfig, resolve_dag: DagResolver, is_revoked: RevocationCheck | None = None
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
    return AuthInterceptor(authenticator, policy, resolve_dag, is_revoked)


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
