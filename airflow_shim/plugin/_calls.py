"""The plugin's calls to the sidecar: as the api-server's delegate, on behalf of Airflow's user.

Every call carries the api-server's own token (``SIDECAR_TOKEN`` / ``SIDECAR_TOKEN_FILE``,
whose principal holds the sidecar's ``delegate`` role) and names the user Airflow has
authenticated in ``x-sidecar-on-behalf-of-bin`` (UTF-8): the sidecar records that user as the backfill's
``triggering_user_name`` and rate-limits under that name. Failures come back as Airflow's own
answers (:func:`sidecar.gateway.airflow_error`, the gateway's translation); an unreachable
sidecar is :class:`SidecarUnavailable`, answered 503 (or, when configured, by Airflow itself).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import HTTPException
from google.protobuf.message import Message

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.config import PluginSettings
from sidecar.gateway import Upstream, airflow_error, from_rpc_error
from sidecar.names import ON_BEHALF_OF_METADATA

log = logging.getLogger(__name__)

_SERVICE = "/airflow_sidecar.v1.BackfillService/"
#: The sidecar's answers that mean "not reachable or not answering", not "refused".
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class SidecarUnavailable(Exception):
    """The sidecar could not be reached (or did not answer in time); ``detail`` says so for users."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SidecarCalls:
    """Unary calls to the sidecar's BackfillService on behalf of Airflow's users."""

    def __init__(self, settings: PluginSettings) -> None:
        if settings.target is None:
            raise ValueError("the plugin needs SIDECAR_TARGET")
        security = settings.security
        self.target = settings.target
        self.fallback = settings.fallback
        self._authorization = f"Bearer {security.token}" if security.token else None
        credentials = security.channel_credentials() if security.uses_tls else None
        self._upstream = Upstream(settings.target, timeout=settings.timeout, credentials=credentials)

    async def call(self, method: str, request: Message, response_class: type[Message], user: str) -> Any:
        """Call ``method`` as ``user``; the sidecar's refusals raise Airflow's ``HTTPException``.

        Raises:
            HTTPException: the sidecar refused the call (Airflow's status and detail).
            SidecarUnavailable: the sidecar is down or did not answer in time.
        """
        try:
            return await self._upstream.unary(
                _SERVICE + method,
                request,
                response_class,
                self._authorization,
                ((ON_BEHALF_OF_METADATA, user.encode()),),
            )
        except grpc.RpcError as exc:
            raise self._translate(exc, request) from None

    def _translate(self, exc: grpc.RpcError, request: Message) -> Exception:
        error = from_rpc_error(exc)
        if error.code in _UNREACHABLE:
            log.warning("the backfill sidecar at %s is unreachable: %s", self.target, error.code.name)
            return SidecarUnavailable(
                f"The backfill sidecar ({self.target}) is unavailable: backfills cannot be created, "
                "paused, unpaused or cancelled until it is back. Retry later; an administrator can "
                "set SIDECAR_PLUGIN_FALLBACK=airflow to let Airflow answer meanwhile."
            )
        if error.code == grpc.StatusCode.UNAUTHENTICATED:
            # The api-server's own credentials, not the user's (Airflow authenticated the user).
            log.error("the backfill sidecar refused the api-server's token: %s", error.message)
            return HTTPException(
                503,
                "The backfill sidecar refused the api-server's credentials (SIDECAR_TOKEN must be "
                "a token of a principal with the sidecar's 'delegate' role).",
            )
        dag_id = request.backfill.dag_id if isinstance(request, pb.CreateBackfillRequest) else ""
        answer = airflow_error(error, dag_id=dag_id)
        return HTTPException(answer.status, answer.detail)

    async def close(self) -> None:
        """Close the running loop's channel."""
        await self._upstream.close()
