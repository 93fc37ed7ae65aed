"""The ``ErrorInfo`` reasons of refused calls: a contract with every front door.

The REST gateway maps them to Airflow's exact HTTP answers: 401 for a missing or expired
token, 403 ``Invalid JWT token`` for a bad one, 403 for a call the policy does not allow.
"""

#: No ``authorization`` metadata, or not a ``Bearer`` token (HTTP 401).
TOKEN_MISSING = "TOKEN_MISSING"
#: A well-signed JWT whose ``exp`` has passed (HTTP 401).
TOKEN_EXPIRED = "TOKEN_EXPIRED"
#: Any other bad token: wrong signature, audience, malformed, unknown static token (HTTP 403).
TOKEN_INVALID = "TOKEN_INVALID"
#: Authenticated, but the policy does not allow this action on this DAG (HTTP 403).
PERMISSION_DENIED = "PERMISSION_DENIED"
#: The gRPC metadata key carrying ``Bearer <token>`` (the gateway forwards HTTP Authorization).
AUTHORIZATION_METADATA = "authorization"
#: The ``ErrorInfo.domain`` of every sidecar error (the same as ``sidecar.api``'s).
DOMAIN = "airflow-sidecar.apache.org"
