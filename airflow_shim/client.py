"""A Tick client with a short deadline and a circuit breaker."""

from __future__ import annotations

import logging
import os
import socket
import time

import grpc

from sidecar._gen.airflow_sidecar.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)


class TickClient:
    """Calls ``SchedulerService.Tick``; never raises.

    After ``failure_threshold`` consecutive failures the breaker opens and no call is
    made for ``cooldown`` seconds, so a failing sidecar costs the scheduler nothing.
    """

    def __init__(
        self,
        target: str,
        *,
        deadline: float = 0.5,
        failure_threshold: int = 3,
        cooldown: float = 30.0,
    ) -> None:
        self.target = target
        self.deadline = deadline
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._channel = grpc.insecure_channel(target)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._failures = 0
        self._open_until = 0.0
        self._scheduler_id = f"{socket.gethostname()}:{os.getpid()}"
        self.last_response: scheduler_pb2.TickResponse | None = None

    @classmethod
    def from_env(cls) -> TickClient:
        """Configured by SIDECAR_TARGET and SIDECAR_TICK_DEADLINE (seconds)."""
        return cls(
            os.environ.get("SIDECAR_TARGET", "127.0.0.1:50051"),
            deadline=float(os.environ.get("SIDECAR_TICK_DEADLINE", "0.5")),
        )

    def tick(self) -> scheduler_pb2.TickResponse | None:
        """One Tick; None when the sidecar is unreachable, slow or the breaker is open."""
        now = time.monotonic()
        if now < self._open_until:
            return None
        try:
            response: scheduler_pb2.TickResponse = self._stub.Tick(
                scheduler_pb2.TickRequest(scheduler_id=self._scheduler_id), timeout=self.deadline
            )
        except grpc.RpcError as exc:
            self._failures += 1
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                # Slow is not broken: the sidecar finishes the work in the background.
                log.debug("sidecar tick exceeded its %.2fs deadline", self.deadline)
            else:
                log.warning("sidecar tick failed (%s): backfills wait", code.name if code else exc)
            if self._failures >= self.failure_threshold and code != grpc.StatusCode.DEADLINE_EXCEEDED:
                self._open_until = now + self.cooldown
                log.warning(
                    "sidecar unreachable %s times; not calling it for %.0fs", self._failures, self.cooldown
                )
            return None
        except Exception:  # never let the sidecar break the scheduler
            log.exception("unexpected error calling the sidecar")
            return None
        self._failures = 0
        self.last_response = response
        return response

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
