"""The security flags of ``serve`` (who may call) and of the client commands (who is calling).

Every flag has an environment variable, so secrets need not appear in ``ps`` output:
``SIDECAR_JWT_SECRET`` rather than ``--jwt-secret``, ``SIDECAR_TOKEN`` or a token file rather
than ``--token``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from sidecar.auth import AIRFLOW_AUDIENCE, AuthConfig, ClientSecurity, TlsConfig, read_token


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """Authentication, authorisation and TLS flags of ``serve``."""
    group = serve.add_argument_group("security (one of --jwt-secret, --token-file or --no-auth is required)")
    group.add_argument(
        "--jwt-secret",
        default=_env("SIDECAR_JWT_SECRET"),
        help="accept JWTs signed with this secret (Airflow's [api_auth] jwt_secret; HS512 or HS256); "
        "env SIDECAR_JWT_SECRET (preferred: flags show in ps)",
    )
    group.add_argument(
        "--jwt-audience",
        default=_env("SIDECAR_JWT_AUDIENCE") or AIRFLOW_AUDIENCE,
        help=f"required aud claim (default {AIRFLOW_AUDIENCE}); env SIDECAR_JWT_AUDIENCE",
    )
    group.add_argument(
        "--jwt-issuer", default=_env("SIDECAR_JWT_ISSUER"), help="required iss claim; env SIDECAR_JWT_ISSUER"
    )
    group.add_argument(
        "--token-file",
        default=_env("SIDECAR_TOKEN_FILE"),
        help="TOML file of service-account tokens by SHA-256 (see README, Security); env SIDECAR_TOKEN_FILE",
    )
    group.add_argument(
        "--policy",
        default=_env("SIDECAR_POLICY"),
        help="TOML policy: principals/roles -> DAG globs -> actions (default: any authenticated caller "
        "may do any DAG action); env SIDECAR_POLICY",
    )
    group.add_argument(
        "--no-auth",
        action="store_true",
        help="no authentication, for local development; refused unless --listen is loopback",
    )
    group.add_argument(
        "--tls-cert", default=_env("SIDECAR_TLS_CERT"), help="PEM certificate; env SIDECAR_TLS_CERT"
    )
    group.add_argument(
        "--tls-key", default=_env("SIDECAR_TLS_KEY"), help="PEM private key; env SIDECAR_TLS_KEY"
    )
    group.add_argument(
        "--tls-client-ca",
        default=_env("SIDECAR_TLS_CLIENT_CA"),
        help="PEM CA bundle: require client certificates signed by it (mutual TLS); env SIDECAR_TLS_CLIENT_CA",
    )


def serve_security(args: argparse.Namespace) -> tuple[AuthConfig, TlsConfig | None]:
    """The server's auth and TLS settings from the parsed flags.

    Raises:
        ValueError: TLS half configured (one line).
    """
    auth = AuthConfig(
        jwt_secret=args.jwt_secret,
        token_file=_path(args.token_file),
        policy_file=_path(args.policy),
        jwt_audience=args.jwt_audience,
        jwt_issuer=args.jwt_issuer,
        no_auth=args.no_auth,
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
    tls = (
        TlsConfig(Path(args.tls_cert), Path(args.tls_key), _path(args.tls_client_ca))
        if args.tls_cert
        else None
    )
    return auth, tls


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """Token and TLS flags of the client commands (accepted before or after the action)."""
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token (a JWT or a service token); env SIDECAR_TOKEN",
    )
    parser.add_argument(
        "--token-file",
        dest="client_token_file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="read the bearer token from this file; env SIDECAR_TOKEN_FILE",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=argparse.SUPPRESS,
        help="use TLS (system roots); env SIDECAR_TLS=1",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PEM CA bundle to verify the sidecar (implies TLS); env SIDECAR_TLS_CA",
    )
    parser.add_argument(
        "--tls-cert",
        dest="tls_client_cert",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PEM client certificate for mutual TLS; env SIDECAR_TLS_CLIENT_CERT",
    )
    parser.add_argument(
        "--tls-key",
        dest="tls_client_key",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PEM key of --tls-cert; env SIDECAR_TLS_CLIENT_KEY",
    )


def client_security(args: argparse.Namespace) -> ClientSecurity:
    """The client's token and TLS settings: flags first, then the environment.

    Raises:
        ValueError: the token file cannot be read.
    """
    token: str | None = getattr(args, "token", None)
    if token is None and getattr(args, "client_token_file", None):
        token = read_token(Path(args.client_token_file))
    env = dict(os.environ)
    if token is not None:  # a flag wins: do not even read a token file named in the environment
        env.pop("SIDECAR_TOKEN_FILE", None)
    base = ClientSecurity.from_env(env)
    return dataclasses.replace(
        base,
        token=token or base.token,
        tls=bool(getattr(args, "tls", False)) or base.tls,
        ca=_path(getattr(args, "tls_ca", None)) or base.ca,
        cert=_path(getattr(args, "tls_client_cert", None)) or base.cert,
        key=_path(getattr(args, "tls_client_key", None)) or base.key,
    )
