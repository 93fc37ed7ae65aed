"""``airflow-sidecar token …``: mint a JWT the way Airflow's API server does, or hash a service token.

* ``token jwt --subject S --role R`` signs a token with the shared secret, with the claims
  Airflow 3.3's ``JWTGenerator`` writes (``jti``, ``aud``, ``nbf``, ``exp``, ``iat``, ``sub``,
  ``role``), for scripts and for the scheduler shim's ``SIDECAR_TOKEN``.
* ``token hash --principal P --role R`` reads a service token on stdin and prints its
  ``[[token]]`` entry for the ``--token-file``, so the file never holds the token itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid

import jwt

from sidecar.auth import AIRFLOW_AUDIENCE, check_jwt_secret, token_digest
from sidecar.config import add_jwt_secret_arguments


class TokenUsageError(ValueError):
    """A missing secret or an empty token; printed as one line."""


def add_token_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``token`` subcommand and its ``jwt`` and ``hash`` actions."""
    token = commands.add_parser("token", help="mint a JWT or hash a service token")
    actions = token.add_subparsers(dest="token_action", required=True)
    mint = actions.add_parser("jwt", help="sign a JWT as Airflow's API server would (shared secret)")
    mint.add_argument("--subject", required=True, help="the principal (sub claim)")
    mint.add_argument("--role", action="append", default=[], help="a role (repeatable; scheduler may Tick)")
    mint.add_argument("--valid-for", type=int, default=3600, help="seconds (default 3600)")
    mint.add_argument(
        "--algorithm",
        choices=("HS512", "HS256"),
        default="HS512",
        help="signing algorithm (Airflow's: HS512)",
    )
    mint.add_argument(
        "--audience",
        default=AIRFLOW_AUDIENCE,
        help=f"the aud claim: Airflow's [api_auth] jwt_audience (default {AIRFLOW_AUDIENCE})",
    )
    add_jwt_secret_arguments(mint)
    hashed = actions.add_parser("hash", help="print the token-file entry of a token read on stdin")
    hashed.add_argument(
        "--principal", required=True, help="the name the sidecar knows this token's holder by"
    )
    hashed.add_argument("--role", action="append", default=[], help="a role (repeatable)")


def mint_jwt(
    secret: str, subject: str, roles: list[str], *, valid_for: int, algorithm: str, audience: str
) -> str:
    """A JWT with the claims of Airflow's ``JWTGenerator`` (one role: a string, as Airflow's)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject}
    if roles:
        claims["role"] = roles[0] if len(roles) == 1 else roles
    claims |= {"jti": uuid.uuid4().hex, "aud": audience, "nbf": now, "exp": now + valid_for, "iat": now}
    return jwt.encode(claims, secret, algorithm=algorithm)


def run_token_command(args: argparse.Namespace) -> int:
    """Run ``token jwt`` or ``token hash``.

    Raises:
        TokenUsageError: no secret (or one too short for the algorithm) for ``jwt``, or an
            empty token on stdin for ``hash``.
    """
    if args.token_action == "jwt":
        if not args.jwt_secret:
            raise TokenUsageError(
                "no JWT secret: export SIDECAR_JWT_SECRET (or pass --jwt-secret) with Airflow's "
                "[api_auth] jwt_secret, e.g. SIDECAR_JWT_SECRET=$(airflow config get-value api_auth jwt_secret)"
            )
        latest = int(dt.datetime(9999, 12, 31, tzinfo=dt.UTC).timestamp()) - int(time.time())
        if not 0 < args.valid_for <= latest:
            # An expired token, or an ``exp`` past year 9999 that no JWT library reads as a date.
            raise TokenUsageError(f"--valid-for must be from 1 to {latest} seconds, got {args.valid_for}")
        if not args.allow_weak_jwt_secret:
            try:
                check_jwt_secret(args.jwt_secret, args.algorithm)
            except ValueError as exc:
                raise TokenUsageError(str(exc)) from exc
        print(
            mint_jwt(
                args.jwt_secret,
                args.subject,
                args.role,
                valid_for=args.valid_for,
                algorithm=args.algorithm,
                audience=args.audience,
            )
        )
        return 0
    token = sys.stdin.read().strip()
    if not token:
        raise TokenUsageError(
            "no token on stdin (e.g. openssl rand -hex 32 | airflow-sidecar token hash ...)"
        )
    print("[[token]]")
    print(f"sha256 = {json.dumps(token_digest(token))}")
    print(f"principal = {json.dumps(args.principal)}")
    print(f"roles = {json.dumps(args.role)}")
    return 0
