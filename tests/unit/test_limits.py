"""The per-principal write rate limit."""

from __future__ import annotations

import pytest

from sidecar.api._limits import RateLimiter
from sidecar.errors import ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_sustained_rate_per_principal() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("alice", "create")
    with pytest.raises(ResourceExhausted, match=r"retry in 1\.0s") as excinfo:
        limiter.check("alice", "create")
    assert excinfo.value.retry_after == pytest.approx(1.0)
    limiter.check("bob", "create")  # buckets are per principal
    clock.now = 1.0
    limiter.check("alice", "create")  # one token refilled after a second
    with pytest.raises(ResourceExhausted):
        limiter.check("alice", "create")


def test_zero_rate_disables_and_buckets_are_bounded() -> None:
    RateLimiter(rate_per_minute=0, burst=0).check(None, "create")
    limiter = RateLimiter(rate_per_minute=60, burst=1, max_principals=2)
    for name in ("a", "b", "c"):
        limiter.check(name, "create")
    assert len(limiter._buckets) == 2
