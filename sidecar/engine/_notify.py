"""Backfill events out of the outbox: recorded on every pass, delivered to webhooks, signed, retried.

One :meth:`Notifier.run_once` pass (``serve`` runs one a second, and one right after each
pause or cancel call) records the events of every backfill whose state changed (whoever
changed it: see :mod:`sidecar.store._notify`), then claims the deliveries that are due and
sends them at most :data:`CONCURRENCY` at a time, each with a timeout. A request is JSON,
signed::

    X-Sidecar-Event-Id: 42                      (the idempotency key: the same on every retry)
    X-Sidecar-Event: completed
    X-Sidecar-Timestamp: 1767225600             (Unix seconds of this attempt)
    X-Sidecar-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A 2xx answer delivers it; anything else (an error status, a redirect, a timeout, a refused
address) is retried with exponential backoff and jitter, ``5 s x 2^(attempt-1)`` up to 15
minutes, and given up after ``max_attempts``, the last error kept and shown on the backfill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.config import WebhookSettings
from sidecar.engine._config import Parts
from sidecar.engine._webhook_urls import public_target
from sidecar.store import Delivery, claim_deliveries, delivered, delivery_failed, record_events

__all__ = ["CONCURRENCY", "Notifier", "body_of", "retry_delay", "signature"]

log = logging.getLogger(__name__)

#: Deliveries in flight at once (and claimed per pass).
CONCURRENCY = 8
#: A claimed delivery's lease: another pass (or replica) may take it over after this.
_LEASE = dt.timedelta(minutes=2)
_BASE_DELAY = 5.0
#: The jitter's own generator: the process's global ``random`` state is left alone.
_JITTER = random.SystemRandom()
_MAX_DELAY = 900.0


def retry_delay(attempt: int, jitter: Callable[[], float] = _JITTER.random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential from 5 s, at most 15 min, +-50% jitter."""
    base: float = min(_BASE_DELAY * 2.0 ** max(attempt - 1, 0), _MAX_DELAY)
    return base * (0.5 + jitter())


def body_of(delivery: Delivery) -> bytes:
    """The request body: the event as JSON, or a Slack-compatible message (``{"text": ...}``)."""
    event = delivery.event
    if delivery.format == "slack":
        b = event.payload["backfill"]
        text = (
            f"Backfill {b['id']} of `{b['dag_id']}` ({b['from_date']} to {b['to_date']}): "
            f"{event.kind.replace('_', ' ')}"
        )
        return json.dumps({"text": text}).encode()
    return json.dumps({"id": event.id, **event.payload}, sort_keys=True).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Sidecar-Signature`` value of a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class Notifier:
    """Records backfill events and delivers them to webhooks (one pass at a time)."""

    def __init__(
        self, parts: Parts, settings: WebhookSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._parts = parts
        self._settings = settings
        self._client = httpx.AsyncClient(
            timeout=settings.timeout, follow_redirects=False, transport=transport, trust_env=False
        )
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def record(self, backfill_ids: list[int] | None = None) -> None:
        """Record the events of changed backfills (``backfill_ids``: only those)."""
        now = self._parts.clock()

        async def work(conn: AsyncConnection) -> None:
            await record_events(conn, now, backfill_ids=backfill_ids)

        await self._parts.tx.write(work)

    async def run_once(self) -> int:
        """Record every changed backfill's events, then send the deliveries due; return how many were sent."""
        async with self._lock:
            await self.record()
            if not self._settings.enabled:
                return 0
            now = self._parts.clock()

            async def claim(conn: AsyncConnection) -> list[Delivery]:
                return await claim_deliveries(conn, now, _LEASE, CONCURRENCY)

            due = await self._parts.tx.write(claim)
            results = await asyncio.gather(*(self._send(d) for d in due))
            return sum(results)

    async def _send(self, delivery: Delivery) -> bool:
        error = await public_target(delivery.url, self._settings)
        if error is None:
            error = await self._post(delivery)
        now = self._parts.clock()
        event_id = delivery.event.id
        if error is None:
            await self._parts.tx.write(lambda conn: delivered(conn, event_id, now))
            return True
        retry_at: dt.datetime | None = None
        if delivery.attempt < self._settings.max_attempts:
            retry_at = now + dt.timedelta(seconds=retry_delay(delivery.attempt))
        log.warning(
            "webhook delivery of event %d (backfill %d, attempt %d) failed: %s; %s",
            event_id,
            delivery.event.backfill_id,
            delivery.attempt,
            error,
            f"retrying at {retry_at:%H:%M:%S}" if retry_at else "given up",
        )
        await self._parts.tx.write(lambda conn: delivery_failed(conn, event_id, error, retry_at))
        return False

    async def _post(self, delivery: Delivery) -> str | None:
        """Send one request; None when the receiver accepted it, else why not (safe to show)."""
        body = body_of(delivery)
        timestamp = int(self._parts.clock().timestamp())
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            "User-Agent": "airflow-sidecar-webhook/1",
            "X-Sidecar-Event-Id": str(delivery.event.id),
            "X-Sidecar-Event": delivery.event.kind,
            "X-Sidecar-Timestamp": str(timestamp),
            "X-Sidecar-Signature": signature(self._settings.secret or "", timestamp, body),
        }
        try:
            async with self._client.stream("POST", delivery.url, content=body, headers=headers) as response:
                status = response.status_code  # the body is never read: a receiver cannot fill memory
        except httpx.TimeoutException:
            return f"no answer within {self._settings.timeout:g} s"
        except httpx.HTTPError as exc:
            return f"request failed: {type(exc).__name__}"
        if 200 <= status < 300:
            return None
        return f"answered HTTP {status}"
