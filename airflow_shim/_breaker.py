"""A circuit breaker for the shim's calls to the sidecar, on an injectable clock.

The scheduler must never pay for a sidecar that is down: after ``threshold`` failures
in a row the breaker opens and no call is made for ``cooldown`` seconds. Then one trial
call is let through (half-open): success closes the breaker, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Counts consecutive failures and says whether a call may be made now."""

    def __init__(
        self, *, threshold: int = 3, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._open_until: float | None = None
        self.opened = 0
        """How many times the breaker has opened (for logs and tests)."""

    @property
    def is_open(self) -> bool:
        """Whether calls are being refused right now."""
        return self._open_until is not None and self._clock() < self._open_until

    def allow(self) -> bool:
        """Whether a call may be made now (closed, or half-open after the cooldown)."""
        return not self.is_open

    def success(self) -> None:
        """A call succeeded: close the breaker."""
        self.failures = 0
        self._open_until = None

    def failure(self) -> bool:
        """A call failed; return True when this failure opened the breaker."""
        self.failures += 1
        half_open = self._open_until is not None
        if half_open or self.failures >= self.threshold:
            self._open_until = self._clock() + self.cooldown
            self.opened += 1
            return True
        return False
