"""Bounded latency statistics (p50, p95, fps) for telemetry and the local API."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    """One consistent reading of the statistics; ``fps`` is over the last ``window_s``.

    ``count`` and ``total_ms`` cover every call ever recorded (a Prometheus summary's
    ``_count`` and ``_sum``); the percentiles cover the ring only.
    """

    count: int
    p50_ms: float
    p95_ms: float
    fps: float
    window_s: float
    total_ms: float


class LatencyStats:
    """A ring of the last ``capacity`` latencies with their times: memory stays fixed for months.

    Percentiles are over the ring (recent behaviour, not the whole life of the process);
    ``count`` is every call ever recorded. Safe to record from several threads.
    """

    def __init__(self, capacity: int = 1024, window_s: float = 10.0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.capacity = capacity
        self.window_s = window_s
        self._lock = threading.Lock()
        self._ring: deque[tuple[float, float]] = deque(maxlen=capacity)
        self._count = 0
        self._total_ms = 0.0
        self._first: float | None = None

    def record(self, latency_ms: float, at: float | None = None) -> None:
        stamp = time.monotonic() if at is None else at
        with self._lock:
            self._ring.append((stamp, float(latency_ms)))
            self._count += 1
            self._total_ms += float(latency_ms)
            if self._first is None:
                self._first = stamp

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def snapshot(self, now: float | None = None) -> LatencySnapshot:
        current = time.monotonic() if now is None else now
        with self._lock:
            items = list(self._ring)
            count = self._count
            total_ms = self._total_ms
            first = self._first
        if not items or first is None:
            return LatencySnapshot(count, 0.0, 0.0, 0.0, self.window_s, total_ms)
        values = np.fromiter((ms for _t, ms in items), dtype=np.float64, count=len(items))
        p50, p95 = np.percentile(values, [50, 95])
        since = current - self.window_s
        recent = [t for t, _ms in items if t >= since]
        fps = self._rate(recent, first, current)
        return LatencySnapshot(count, float(p50), float(p95), fps, self.window_s, total_ms)

    def _rate(self, recent: list[float], first: float, now: float) -> float:
        # A young process has not lived a whole window yet; and a ring full inside the window
        # only covers part of it. Either way divide by the span really observed.
        if not recent:
            return 0.0
        span = min(self.window_s, now - first)
        if len(recent) == self.capacity:
            span = min(span, now - recent[0])
        return len(recent) / span if span > 0 else 0.0
