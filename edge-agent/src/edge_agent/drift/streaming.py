"""Streaming change detectors for error rates: Page-Hinkley and a bounded ADWIN."""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import numpy as np

Direction = Literal["up", "down"]


class PageHinkley:
    """Two-sided Page-Hinkley test on a stream of values (here 0/1 errors).

    Evidence of a rise (or fall) of the mean beyond ``delta`` accumulates; once it passes
    ``threshold`` a change is reported and the test restarts on the new level.
    """

    def __init__(self, delta: float, threshold: float, min_samples: int) -> None:
        self.delta = delta
        self.threshold = threshold
        self.min_samples = min_samples
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self._up = 0.0
        self._up_min = 0.0
        self._down = 0.0
        self._down_max = 0.0

    @property
    def up_statistic(self) -> float:
        return self._up - self._up_min

    @property
    def down_statistic(self) -> float:
        return self._down_max - self._down

    def update(self, x: float) -> Direction | None:
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self._up += x - self.mean - self.delta
        self._up_min = min(self._up_min, self._up)
        self._down += x - self.mean + self.delta
        self._down_max = max(self._down_max, self._down)
        if self.n < self.min_samples:
            return None
        if self.up_statistic > self.threshold:
            self.reset()
            return "up"
        if self.down_statistic > self.threshold:
            self.reset()
            return "down"
        return None


class Adwin:
    """ADWIN (Bifet & Gavaldà, 2007): keep the longest recent window whose two halves, at
    every split, have means within a Hoeffding-style bound; a cut means the mean changed.

    This version holds at most ``max_window`` values and tests every ``clock`` values with
    vectorised prefix sums, so memory is bounded and the cost per value is small.
    """

    def __init__(self, delta: float, max_window: int, clock: int, min_side: int = 16) -> None:
        self.delta = delta
        self.clock = clock
        self.min_side = min_side
        self._values: deque[float] = deque(maxlen=max_window)
        self._since = 0
        self.last_cut: tuple[float, float] | None = None

    @property
    def width(self) -> int:
        return len(self._values)

    @property
    def mean(self) -> float:
        return sum(self._values) / len(self._values) if self._values else math.nan

    def update(self, x: float) -> Direction | None:
        self._values.append(float(x))
        self._since += 1
        if self._since < self.clock or len(self._values) < 2 * self.min_side:
            return None
        self._since = 0
        return self._test()

    def _test(self) -> Direction | None:
        v = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        n = v.size
        prefix = np.cumsum(v)
        split = np.arange(self.min_side, n - self.min_side + 1)
        n0 = split.astype(np.float64)
        n1 = n - n0
        mu0 = prefix[split - 1] / n0
        mu1 = (prefix[-1] - prefix[split - 1]) / n1
        variance = float(v.var())
        m = 1.0 / (1.0 / n0 + 1.0 / n1)
        log_term = math.log(2.0 * math.log(n) / self.delta) if n > 2 else math.log(2 / self.delta)
        eps = np.sqrt(2.0 / m * variance * log_term) + 2.0 / (3.0 * m) * log_term
        cut = np.abs(mu1 - mu0) > eps
        if not cut.any():
            return None
        last = int(np.flatnonzero(cut)[-1])
        before, after = float(mu0[last]), float(mu1[last])
        for _ in range(int(split[last])):
            self._values.popleft()
        self.last_cut = (before, after)
        return "up" if after > before else "down"
