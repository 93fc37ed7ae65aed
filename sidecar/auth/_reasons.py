"""The ``ErrorInfo`` reasons of refused calls: a contract with every front door.

The REST gateway maps them to Airflow's exact HTTP answers: 401 for a missing or expired
token, 403 ``Invalid JWT token`` for a bad one, 403 for a call the policy does not allow.
"""

from sidecar.errors import DOMAIN
from sidecar.names import AUTHORIZATION_METADATA

__all__ = [
    "AUTHORIZATION_METADATA",
    "DOMAIN",
    "PERMISSION_DENIED",
    "TOKEN_EXPIRED",
    "TOKEN_INVALID",
    "TOKEN_MISSING",
]

#: No ``authorization`` metadata, or not a ``Bearer`` token (HTTP 401).
TOKEN_MISSING = "TOKEN_MISSING"
#: A well-signed JWT whose ``exp`` has passed (HTTP 401).
TOKEN_EXPIRED = "TOKEN_EXPIRED"
#: Any other bad token: wrong signature, audience, malformed, unknown static token (HTTP 403).
TOKEN_INVALID = "TOKEN_INVALID"
#: Authenticated, but the policy does not allow this action on this DAG (HTTP 403).
PERMISSION_DENIED = "PERMISSION_DENIED"
