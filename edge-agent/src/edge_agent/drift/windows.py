"""Bounded sliding and tumbling windows that keep their histograms up to date per sample.

Each window is a fixed ring buffer: adding a sample costs O(features), testing costs
O(bins), and memory never grows with the length of the stream.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_agent.drift.config import WindowConfig
from edge_agent.protocol.messages import DriftWindow

FloatArray = npt.NDArray[np.float64]


def _epoch(ts: datetime) -> float:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no time zone")
    return ts.timestamp()


class SampleWindow:
    """Ring-buffer bookkeeping shared by every window: which slot is next, when to test."""

    def __init__(self, config: WindowConfig) -> None:
        self.size = config.size
        self.mode: Literal["sliding", "tumbling"] = config.mode
        self.step = config.step
        self.min_samples = config.min_samples
        self._ts = np.zeros(self.size, dtype=np.float64)
        self._next = 0
        self.n = 0
        self._since_test = 0

    def _advance(self, ts: datetime) -> tuple[int, bool]:
        """Claim the next slot: its index, and whether it held a sample now evicted."""
        slot = self._next
        evicted = self.n == self.size
        self._ts[slot] = _epoch(ts)
        self._next = (slot + 1) % self.size
        self.n = min(self.n + 1, self.size)
        self._since_test += 1
        return slot, evicted

    def due(self) -> bool:
        """Whether the detector should test the window now."""
        if self.mode == "tumbling":
            return self.n == self.size
        return self.n >= self.min_samples and self._since_test >= self.step

    def tested(self) -> None:
        """A test ran: a tumbling window starts a fresh block."""
        self._since_test = 0
        if self.mode == "tumbling":
            self.clear()

    def clear(self) -> None:
        self.n = 0
        self._next = 0
        self._since_test = 0

    def epochs(self) -> FloatArray:
        """Timestamps (seconds) of the samples held, in no particular order."""
        return self._ts[: self.n].copy() if self.n < self.size else self._ts.copy()

    def describe(self) -> DriftWindow:
        """Start, end and size of the samples held, for alert payloads."""
        if self.n == 0:
            now = datetime.now(UTC)
            return DriftWindow(start=now, end=now, n=0)
        first = (self._next - self.n) % self.size
        last = (self._next - 1) % self.size
        return DriftWindow(
            start=datetime.fromtimestamp(float(self._ts[first]), UTC),
            end=datetime.fromtimestamp(float(self._ts[last]), UTC),
            n=self.n,
        )


class HistogramWindow(SampleWindow):
    """Per-feature bin counts of the samples in the window, on each feature's baseline bins.

    Missing values (NaN) are left out of that feature's counts only, so one broken sensor
    does not blind the others.
    """

    def __init__(self, config: WindowConfig, edges: Sequence[Sequence[float]]) -> None:
        super().__init__(config)
        if not edges:
            raise ValueError("a histogram window needs at least one feature")
        self.features = len(edges)
        self.bins = np.array([len(e) - 1 for e in edges], dtype=np.int64)
        if np.any(self.bins < 1):
            raise ValueError("every feature needs at least two bin edges")
        width = int(self.bins.max())
        # Interior edges, padded with +inf: a value's bin is how many interior edges it
        # reaches, which also sends out-of-range values to the first or last bin.
        self._inner = np.full((self.features, max(width - 1, 1)), np.inf)
        for i, e in enumerate(edges):
            inner = np.asarray(e, dtype=np.float64)[1:-1]
            self._inner[i, : inner.size] = inner
        self._bin = np.full((self.size, self.features), -1, dtype=np.int64)
        self._value = np.zeros((self.size, self.features), dtype=np.float64)
        self._counts = np.zeros((self.features, width), dtype=np.int64)
        self._rows = np.arange(self.features)
        self._inner_list = [float(e) for e in edges[0][1:-1]] if self.features == 1 else []

    def add_scalar(self, ts: datetime, value: float) -> None:
        """``add`` for a one-feature window (labels, confidence) without array overhead."""
        if self.features != 1:
            raise ValueError(f"window holds {self.features} features, not one")
        slot, evicted = self._advance(ts)
        if evicted:
            old = int(self._bin[slot, 0])
            if old >= 0:
                self._counts[0, old] -= 1
        if math.isfinite(value):
            idx = bisect.bisect_right(self._inner_list, value)
            self._counts[0, idx] += 1
            self._bin[slot, 0] = idx
            self._value[slot, 0] = value
        else:
            self._bin[slot, 0] = -1
            self._value[slot, 0] = math.nan

    def add(self, ts: datetime, values: npt.ArrayLike) -> None:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size != self.features:
            raise ValueError(f"expected {self.features} values, got {x.size}")
        slot, evicted = self._advance(ts)
        if evicted:
            old = self._bin[slot]
            held = old >= 0
            self._counts[self._rows[held], old[held]] -= 1
        finite = np.isfinite(x)
        idx = np.where(finite, (x[:, None] >= self._inner).sum(axis=1), -1)
        self._bin[slot] = idx
        self._value[slot] = np.where(finite, x, np.nan)
        self._counts[self._rows[finite], idx[finite]] += 1

    def clear(self) -> None:
        super().clear()
        self._counts[:] = 0
        self._bin[:] = -1

    def counts(self, feature: int) -> npt.NDArray[np.int64]:
        """Bin counts of one feature (only its own bins)."""
        return self._counts[feature, : self.bins[feature]].copy()

    def count_matrix(self) -> npt.NDArray[np.int64]:
        """Counts of every feature, padded to the widest feature's bins (a read-only view)."""
        view = self._counts.view()
        view.flags.writeable = False
        return view

    def means(self) -> FloatArray:
        """Mean of each feature over the window (NaN where it had no finite value)."""
        if self.n == 0:
            return np.full(self.features, np.nan)
        held = self._value[: self.n] if self.n < self.size else self._value
        finite = np.isfinite(held)
        total = np.where(finite, held, 0.0).sum(axis=0)
        seen = finite.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(seen > 0, total / np.maximum(seen, 1), np.nan)


class MeanWindow(SampleWindow):
    """Running mean of vectors (embeddings) over the window, kept by adding and subtracting."""

    def __init__(self, config: WindowConfig, dim: int) -> None:
        super().__init__(config)
        if dim < 1:
            raise ValueError("vector dimension must be at least 1")
        self.dim = dim
        self._rows = np.zeros((self.size, dim), dtype=np.float64)
        self._sum = np.zeros(dim, dtype=np.float64)
        self._added = 0

    def add(self, ts: datetime, vector: npt.ArrayLike) -> None:
        v = np.asarray(vector, dtype=np.float64).reshape(-1)
        if v.size != self.dim:
            raise ValueError(f"expected a vector of {self.dim}, got {v.size}")
        if not np.all(np.isfinite(v)):
            raise ValueError("vector holds NaN or infinity")
        slot, evicted = self._advance(ts)
        if evicted:
            self._sum -= self._rows[slot]
        self._rows[slot] = v
        self._sum += v
        self._added += 1
        if self._added % (16 * self.size) == 0:
            # Re-sum now and then so rounding from add/subtract cannot accumulate.
            self._sum = self._rows[: self.n].sum(axis=0)

    def clear(self) -> None:
        super().clear()
        self._sum[:] = 0.0

    def mean(self) -> FloatArray:
        if self.n == 0:
            raise ValueError("window is empty")
        return self._sum / self.n
