"""Capped exponential backoff with full jitter, for reconnecting to cameras and serial lines."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class ReconnectBackoff:
    """Delay before the next attempt grows ×``factor`` per failure up to ``max_s``, jittered.

    Jitter keeps a fleet of cameras that lost the same switch from reconnecting in lockstep.
    The delay is drawn uniformly from ``[(1 - jitter) * d, d]``.
    """

    def __init__(
        self,
        min_s: float = 0.5,
        max_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_s <= 0 or max_s < min_s or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("need 0 < min_s <= max_s, factor >= 1 and 0 <= jitter <= 1")
        self.min_s = min_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._next_at = 0.0
        self.last_delay_s = 0.0

    def ceiling(self) -> float:
        """The un-jittered delay after the failures so far."""
        if self.failures == 0:
            return 0.0
        return min(self.max_s, self.min_s * self.factor ** (self.failures - 1))

    def failed(self) -> float:
        """Record a failed attempt; return the delay chosen before the next one."""
        self.failures += 1
        ceiling = self.ceiling()
        delay = ceiling * (1.0 - self.jitter * self._rng.random())
        self.last_delay_s = delay
        self._next_at = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self._next_at = 0.0
        self.last_delay_s = 0.0

    def wait_left(self) -> float:
        """Seconds until the next attempt is due (0 when it is due now)."""
        return max(0.0, self._next_at - self._clock())
