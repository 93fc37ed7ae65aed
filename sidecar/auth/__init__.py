"""Authentication and authorisation of gRPC calls: bearer tokens, a DAG policy, TLS.

The ``ErrorInfo`` reasons are a contract with every front door (the REST gateway maps them
to Airflow's exact HTTP answers): an unauthenticated call fails with ``UNAUTHENTICATED`` and
one of the ``TOKEN_*`` reasons, a call that is not allowed with ``PERMISSION_DENIED`` and the
reason ``PERMISSION_DENIED``, a call on a backfill of a DAG the caller may not read with the
very ``NOT_FOUND`` of a backfill that does not exist (:class:`Access`, checked by the ledger
on the row it loads). See the README's "Security" section for the file formats.
"""

from sidecar.auth._access import Access, current_access
from sidecar.auth._actions import METHOD_RULES, MethodRule, Target
from sidecar.auth._config import (
    AuthConfig,
    TlsConfig,
    build_interceptor,
    check_auth,
    check_jwt_secret,
    is_loopback,
    server_credentials,
)
from sidecar.auth._interceptor import AuthInterceptor, current_principal
from sidecar.auth._page_tokens import PageTokens
from sidecar.auth._policy import SCHEDULER_ROLE, Action, Policy, load_policy, parse_policy
from sidecar.auth._reasons import (
    AUTHORIZATION_METADATA,
    DOMAIN,
    PERMISSION_DENIED,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_MISSING,
)
from sidecar.auth._revocation import RevocationCheck
from sidecar.auth._tokens import (
    AuthenticationError,
    Authenticator,
    Principal,
    load_token_file,
    token_digest,
)
from sidecar.channel import open_channel
from sidecar.config import AIRFLOW_AUDIENCE, ClientSecurity, read_token

__all__ = [
    "AIRFLOW_AUDIENCE",
    "AUTHORIZATION_METADATA",
    "DOMAIN",
    "METHOD_RULES",
    "PERMISSION_DENIED",
    "SCHEDULER_ROLE",
    "TOKEN_EXPIRED",
    "TOKEN_INVALID",
    "TOKEN_MISSING",
    "Access",
    "Action",
    "AuthConfig",
    "AuthInterceptor",
    "AuthenticationError",
    "Authenticator",
    "ClientSecurity",
    "MethodRule",
    "PageTokens",
    "Policy",
    "Principal",
    "RevocationCheck",
    "Target",
    "TlsConfig",
    "build_interceptor",
    "check_auth",
    "check_jwt_secret",
    "current_access",
    "current_principal",
    "is_loopback",
    "load_policy",
    "load_token_file",
    "open_channel",
    "parse_policy",
    "read_token",
    "server_credentials",
    "token_digest",
]
