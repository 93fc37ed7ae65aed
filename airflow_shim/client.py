"""A Tick client with a short deadline, client-side load balancing, retries and a circuit breaker."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable

import grpc

from airflow_shim._breaker import CircuitBreaker
from airflow_shim._policies import mutation_hook_name
from sidecar._gen.airflow_sidecar.v1 import scheduler_pb2, scheduler_pb2_grpc
from sidecar.channel import open_channel
from sidecar.config import ClientSecurity, Environ, ShimSettings

log = logging.getLogger(__name__)

#: Tick is idempotent (it tops windows up to a target and completes finished backfills), so
#: it alone is retried on UNAVAILABLE: a replica that just died is replaced by another one
#: within the same deadline. Nothing else is ever retried by the shim.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "airflow_sidecar.v1.SchedulerService", "method": "Tick"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def channel_target(target: str) -> str:
    """A gRPC target for one or several sidecar replicas.

    ``host:port`` passes through; a comma-separated list of IPv4 ``address:port``
    becomes ``ipv4:a:p1,b:p2`` (one channel, balanced round robin). Targets with a
    scheme (``ipv4:``, ``ipv6:``, ``dns:///``) pass through unchanged.
    """
    target = target.strip()
    if "," not in target or target.startswith(("ipv4:", "ipv6:", "dns:", "unix:")):
        return target
    return "ipv4:" + ",".join(part.strip() for part in target.split(",") if part.strip())


def _security_from_env(environ: Environ | None = None) -> ClientSecurity:
    """The shim's token (SIDECAR_TOKEN or SIDECAR_TOKEN_FILE) and TLS (SIDECAR_TLS_*) settings.

    A token file that cannot be read is logged, not raised: the scheduler keeps running and
    the sidecar refuses the ticks (backfills wait) until the file is fixed.
    """
    try:
        return ClientSecurity.from_env(environ)
    except ValueError as exc:
        log.error("sidecar token not loaded (%s): ticks will be refused", exc)
        return ClientSecurity()


class TickClient:
    """Calls ``SchedulerService.Tick``; never raises.

    A call costs the scheduler at most ``deadline`` seconds (retries included). After
    ``failure_threshold`` consecutive failures the breaker opens and no call is made for
    ``cooldown`` seconds, so a failing sidecar costs the scheduler nothing. A deadline
    exceeded is not a failure: a slow sidecar finishes the work in the background.
    """

    def __init__(
        self,
        target: str,
        *,
        deadline: float = 0.5,
        failure_threshold: int = 3,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        security: ClientSecurity | None = None,
    ) -> None:
        self.target = target
        self.deadline = deadline
        self.breaker = CircuitBreaker(threshold=failure_threshold, cooldown=cooldown, clock=clock)
        self._channel = open_channel(
            channel_target(target),
            security if security is not None else _security_from_env(),
            options=[("grpc.service_config", json.dumps(_SERVICE_CONFIG)), ("grpc.enable_retries", 1)],
        )
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._scheduler_id = f"{socket.gethostname()}:{os.getpid()}"
        #: Reported in every tick: the sidecar refuses backfills while a hook is configured.
        self._mutation_hook = mutation_hook_name()
        self.last_response: scheduler_pb2.TickResponse | None = None
        self.calls = 0
        self.failures = 0

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> TickClient:
        """Configured by :class:`~sidecar.config.ShimSettings`: SIDECAR_TARGET (one or several
        replicas), SIDECAR_TICK_DEADLINE (seconds), SIDECAR_BREAKER_THRESHOLD and
        SIDECAR_BREAKER_COOLDOWN (seconds), and the token and TLS variables."""
        settings = ShimSettings.from_env(environ)
        return cls(
            settings.target,
            deadline=settings.tick_deadline,
            failure_threshold=settings.breaker_threshold,
            cooldown=settings.breaker_cooldown,
            security=_security_from_env(environ),
        )

    def tick(self) -> scheduler_pb2.TickResponse | None:
        """One Tick; None when the sidecar is unreachable, slow, failing or the breaker is open."""
        if not self.breaker.allow():
            return None
        self.calls += 1
        try:
            response: scheduler_pb2.TickResponse = self._stub.Tick(
                scheduler_pb2.TickRequest(
                    scheduler_id=self._scheduler_id, task_instance_mutation_hook=self._mutation_hook
                ),
                timeout=self.deadline,
            )
        except grpc.RpcError as exc:
            self.failures += 1
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                log.debug("sidecar tick exceeded its %.2fs deadline", self.deadline)
                return None
            log.warning("sidecar tick failed (%s): backfills wait", code.name if code else exc)
            if self.breaker.failure():
                log.warning(
                    "sidecar failed %s times in a row; not calling it for %.0fs",
                    self.breaker.failures,
                    self.breaker.cooldown,
                )
            return None
        except Exception:  # never let the sidecar break the scheduler
            log.exception("unexpected error calling the sidecar")
            self.breaker.failure()
            return None
        self.breaker.success()
        self.last_response = response
        return response

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
