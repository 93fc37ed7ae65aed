"""How ``airflow-sidecar serve`` runs: listen addresses, database, auth, TLS, logging and limits.

The flags of ``serve`` and their ``SIDECAR_*`` variables are declared here and turned into one
frozen :class:`ServerSettings`; the server never reads the environment itself. Every default
is the safe one: loopback only, authentication required, rate limits and message sizes on.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sidecar.config import _env
from sidecar.config._client import DEFAULT_TARGET
from sidecar.config._env import Environ
from sidecar.config._options import switch_option, text_option
from sidecar.config._webhooks import WebhookSettings, add_webhook_arguments

#: Airflow's default ``[api_auth] jwt_audience``.
AIRFLOW_AUDIENCE = "apache-airflow"


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
    allow_weak_jwt_secret: bool = False
    """Accept a ``jwt_secret`` shorter than HS512's key size (RFC 7518 section 3.2): tests only."""


@dataclass(frozen=True)
class TlsConfig:
    """TLS on the gRPC port; with ``client_ca``, mutual TLS (clients must present a certificate)."""

    cert: Path
    """PEM certificate chain of the server."""
    key: Path
    """PEM private key of the server."""
    client_ca: Path | None = None
    """PEM CA bundle that client certificates must chain to; None = server-side TLS only."""


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and runs."""

    database_url: str
    """SQLAlchemy URL of Airflow's metadata database."""
    listen: str = DEFAULT_TARGET
    """host:port; loopback unless set otherwise. A port already bound is refused."""
    tick_interval: float = 5.0
    """Seconds between the server's own ticks (the shim ticks on every scheduler loop too)."""
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request or response message."""
    auth: AuthConfig = dataclasses.field(default_factory=AuthConfig)
    """Who may call; the default (nothing configured) is refused at start: secure by default."""
    tls: TlsConfig | None = None
    """TLS (and mutual TLS) on the gRPC port; None = plaintext."""
    ops_listen: str | None = None
    """host:port of the operator endpoint (/metrics, /healthz, /readyz); None: off."""
    writes_per_minute: float = 60.0
    """Sustained create/pause/unpause/cancel calls per principal and minute; 0: unlimited."""
    write_burst: int = 20
    """Such calls a principal may make at once."""
    dry_runs_per_minute: float = 30.0
    """Sustained dry runs (``validate_only`` creates) per principal and minute; 0: unlimited."""
    dry_run_burst: int = 10
    """Dry runs a principal may make at once."""
    planning_workers: int = 2
    """Planning jobs (dry runs, sizing, pending slots) run at once, each in a thread and then a
    low-priority worker process; more calls wait."""
    planning_cpu_seconds: float = 10.0
    """CPU time one call's planning may use; a dry run over it answers what it has."""
    log_level: str = "INFO"
    """Level of the server's log (a ``logging`` level name)."""
    log_format: str = "text"
    """``text``, or ``json``: one object per line with backfill and DAG ids."""
    port_file: Path | None = None
    """Where to write the bound gRPC port once serving (with ``--listen host:0``: no port race)."""
    rerun_with_latest_version: bool | None = None
    """Airflow's ``[core] rerun_with_latest_version`` (None: unset): resolves a backfill's
    ``run_on_latest_version`` when neither the request nor the DAG sets it (Airflow 3.3)."""
    webhooks: WebhookSettings = dataclasses.field(default_factory=WebhookSettings)
    """Where backfill events may be sent, and how they are signed (off until a secret is set)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerSettings:
        """Settings from the options of :func:`add_server_arguments` (their defaults hold the environment).

        Raises:
            ValueError: no database URL, or TLS half configured (one line).
        """
        if not args.database_url:
            raise ValueError(
                "no database: pass --database-url or set SIDECAR_DATABASE_URL to Airflow's metadata "
                "database (its [database] sql_alchemy_conn)"
            )
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if args.tls_client_ca and not args.tls_cert:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        auth = AuthConfig(
            jwt_secret=args.jwt_secret,
            token_file=_path(args.token_file),
            policy_file=_path(args.policy),
            jwt_audience=args.jwt_audience,
            jwt_issuer=args.jwt_issuer,
            no_auth=args.no_auth,
            allow_weak_jwt_secret=args.allow_weak_jwt_secret,
        )
        tls = (
            TlsConfig(Path(args.tls_cert), Path(args.tls_key), _path(args.tls_client_ca))
            if args.tls_cert
            else None
        )
        return cls(
            database_url=args.database_url,
            listen=args.listen,
            tick_interval=args.tick_interval,
            auth=auth,
            tls=tls,
            ops_listen=args.ops_listen,
            writes_per_minute=args.writes_per_minute,
            dry_runs_per_minute=args.dry_runs_per_minute,
            planning_workers=args.planning_workers,
            planning_cpu_seconds=args.planning_cpu_seconds,
            log_level=args.log_level,
            log_format=args.log_format,
            port_file=_path(getattr(args, "port_file", None)),
            rerun_with_latest_version=_tristate(getattr(args, "rerun_with_latest_version", None)),
            webhooks=WebhookSettings.from_args(args),
        )


def _tristate(value: str | None) -> bool | None:
    return None if value is None else value == "true"


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def add_jwt_secret_arguments(parser: argparse._ActionsContainer, environ: Environ | None = None) -> None:
    """``--jwt-secret`` (env ``SIDECAR_JWT_SECRET``) and ``--allow-weak-jwt-secret``, for ``serve`` and ``token jwt``."""
    env = _env.environment(environ)
    text_option(
        parser,
        env,
        "--jwt-secret",
        "SIDECAR_JWT_SECRET",
        "the secret shared with Airflow's [api_auth] jwt_secret (HS512 or HS256; at least 64 bytes)",
        secret=True,
    )
    switch_option(
        parser,
        env,
        "--allow-weak-jwt-secret",
        "SIDECAR_ALLOW_WEAK_JWT_SECRET",
        "accept a JWT secret shorter than the algorithm's key size (RFC 7518 3.2; tests only)",
    )


def add_database_argument(parser: argparse._ActionsContainer, environ: Environ | None = None) -> None:
    """``--database-url`` (env ``SIDECAR_DATABASE_URL``), for ``serve`` and ``doctor``."""
    env = _env.environment(environ)
    text_option(
        parser,
        env,
        "--database-url",
        "SIDECAR_DATABASE_URL",
        "SQLAlchemy URL of Airflow's metadata DB (postgresql+asyncpg://user:password@host:5432/airflow "
        "or sqlite+aiosqlite:////path/to/airflow.db; Airflow's own sql_alchemy_conn works too)",
        metavar="URL",
    )


def add_server_arguments(serve: argparse.ArgumentParser, environ: Environ | None = None) -> None:
    """Every option of ``serve``, each with its ``SIDECAR_*`` variable as the default."""
    env = _env.environment(environ)
    add_database_argument(serve, env)
    text_option(
        serve,
        env,
        "--listen",
        "SIDECAR_LISTEN",
        f"host:port to listen on (default {DEFAULT_TARGET}; refused if already bound)",
        default=DEFAULT_TARGET,
    )
    text_option(
        serve,
        env,
        "--port-file",
        "SIDECAR_PORT_FILE",
        "write the bound port to FILE once serving (with --listen 127.0.0.1:0 the system picks a "
        "free port: no race)",
        metavar="FILE",
    )
    serve.add_argument(
        "--tick-interval", type=float, default=5.0, help="seconds between the sidecar's own ticks (default 5)"
    )
    text_option(serve, env, "--log-level", "SIDECAR_LOG_LEVEL", "default INFO", default="INFO")
    _add_security_arguments(serve, env)
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env.text(env, "SIDECAR_LOG_FORMAT", "text"),
        help="text, or one JSON object per line with backfill and DAG ids; env SIDECAR_LOG_FORMAT",
    )
    serve.add_argument(
        "--writes-per-minute",
        type=float,
        default=_env.number(env, "SIDECAR_WRITES_PER_MINUTE", 60.0, float),
        help="create/pause/unpause/cancel calls per caller and minute (burst 20; 0: unlimited); "
        "env SIDECAR_WRITES_PER_MINUTE",
    )
    serve.add_argument(
        "--dry-runs-per-minute",
        type=float,
        default=_env.number(env, "SIDECAR_DRY_RUNS_PER_MINUTE", 30.0, float),
        help="dry runs per caller and minute (burst 10; 0: unlimited); env SIDECAR_DRY_RUNS_PER_MINUTE",
    )
    serve.add_argument(
        "--planning-workers",
        type=int,
        default=_env.number(env, "SIDECAR_PLANNING_WORKERS", 2, int),
        help="planning jobs run at once (dry runs, sizing): each starts in a thread and moves to a "
        "low-priority worker process when it needs more than a few ms; env SIDECAR_PLANNING_WORKERS",
    )
    serve.add_argument(
        "--planning-cpu-seconds",
        type=float,
        default=_env.number(env, "SIDECAR_PLANNING_CPU_SECONDS", 10.0, float),
        help="CPU seconds one call may spend planning; env SIDECAR_PLANNING_CPU_SECONDS",
    )
    rerun = _env.tristate(
        env, "SIDECAR_RERUN_WITH_LATEST_VERSION", "AIRFLOW__CORE__RERUN_WITH_LATEST_VERSION"
    )
    serve.add_argument(
        "--rerun-with-latest-version",
        choices=("true", "false"),
        default=None if rerun is None else str(rerun).lower(),
        help="Airflow's [core] rerun_with_latest_version, for backfills whose request and DAG leave "
        "run_on_latest_version unset (default: unset, then true); env SIDECAR_RERUN_WITH_LATEST_VERSION, "
        "else AIRFLOW__CORE__RERUN_WITH_LATEST_VERSION",
    )
    add_webhook_arguments(serve, env)
    text_option(
        serve,
        env,
        "--ops-listen",
        "SIDECAR_OPS_LISTEN",
        "host:port of /metrics, /healthz and /readyz (off unless set)",
    )


def _add_security_arguments(serve: argparse.ArgumentParser, env: Environ) -> None:
    group = serve.add_argument_group("security (one of --jwt-secret, --token-file or --no-auth is required)")
    add_jwt_secret_arguments(group, env)
    text_option(
        group,
        env,
        "--jwt-audience",
        "SIDECAR_JWT_AUDIENCE",
        f"required aud claim (default {AIRFLOW_AUDIENCE})",
        default=AIRFLOW_AUDIENCE,
    )
    text_option(group, env, "--jwt-issuer", "SIDECAR_JWT_ISSUER", "required iss claim")
    text_option(
        group,
        env,
        "--token-file",
        "SIDECAR_TOKEN_FILE",
        "TOML file of service-account tokens by SHA-256 (see docs/security.md)",
    )
    text_option(
        group,
        env,
        "--policy",
        "SIDECAR_POLICY",
        "TOML policy: principals/roles -> DAG globs -> actions (default: any authenticated caller "
        "may do any DAG action)",
    )
    group.add_argument(
        "--no-auth",
        action="store_true",
        help="no authentication, for local development; refused unless --listen is loopback",
    )
    text_option(group, env, "--tls-cert", "SIDECAR_TLS_CERT", "PEM certificate")
    text_option(group, env, "--tls-key", "SIDECAR_TLS_KEY", "PEM private key")
    text_option(
        group,
        env,
        "--tls-client-ca",
        "SIDECAR_TLS_CLIENT_CA",
        "PEM CA bundle: require client certificates signed by it (mutual TLS)",
    )
