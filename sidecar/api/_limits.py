"""Request-rate limits: a token bucket per caller for the calls that write, and for dry runs.

Reads are cheap and bounded by paging; creations, pauses and cancels take database locks,
so each principal gets ``burst`` of them at once and ``rate_per_minute`` sustained. Dry
runs write nothing but plan (CPU in a planning worker, up to its budget per call), so
they draw from a bucket of their own, one per principal as well. A refused call gets
``RESOURCE_EXHAUSTED`` with the seconds to wait (``RetryInfo``; 429 over HTTP), and
writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.errors import ResourceExhausted

#: Default sustained dry runs per principal and minute, and how many may come at once.
DRY_RUN_RATE_PER_MINUTE = 30.0
DRY_RUN_BURST = 10


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets by principal (anonymous callers share one bucket)."""

    rate_per_minute: float = 60.0
    """Sustained writes per minute and principal; 0 disables the limit."""
    burst: int = 20
    """Writes a principal may make at once."""
    clock: Callable[[], float] = time.monotonic
    max_principals: int = 10_000
    """Buckets kept; the least recently used are dropped beyond it."""
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def check(self, principal: str | None, action: str) -> None:
        """Take one token for ``principal`` or refuse.

        Raises:
            ResourceExhausted: the caller's bucket is empty.
        """
        if self.rate_per_minute <= 0:
            return
        key = principal or ""
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate_per_minute / 60.0)
        bucket.updated = now
        self._buckets[key] = bucket  # most recently used last
        if len(self._buckets) > self.max_principals:
            self._buckets.pop(next(iter(self._buckets)))
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) * 60.0 / self.rate_per_minute
            raise ResourceExhausted(
                f"too many {action} requests: at most {self.rate_per_minute:g} per minute "
                f"(burst {self.burst}); retry in {wait:.1f}s",
                retry_after=wait,
            )
        bucket.tokens -= 1.0
