"""Distances between a window's histogram and a baseline histogram (numpy only, no scipy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Empty bins would make PSI infinite. The window's counts get half a sample per bin
# (Jeffreys' prior): with a tiny epsilon instead, one empty bin of a 48-sample window
# adds ~0.7 to the PSI of a perfectly stationary stream. The baseline, estimated from
# thousands of rows, only needs a tiny floor.
PSEUDO_COUNT = 0.5
EPSILON = 1e-4


def _as_probs(counts: npt.ArrayLike, epsilon: float) -> FloatArray:
    p = np.asarray(counts, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"expected a non-empty 1-D histogram, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("histogram must hold finite non-negative counts")
    total = float(p.sum())
    if total <= 0:
        raise ValueError("histogram is empty")
    out: FloatArray = p / total
    if epsilon > 0:
        out = (out + epsilon) / (1.0 + epsilon * out.size)
    return out


def _pair(
    current: npt.ArrayLike, baseline: npt.ArrayLike, epsilon: float
) -> tuple[FloatArray, FloatArray]:
    q = _as_probs(current, epsilon)
    p = _as_probs(baseline, epsilon)
    if q.size != p.size:
        raise ValueError(f"histograms differ in size: {q.size} bins vs {p.size}")
    return q, p


def smoothed_counts(counts: npt.ArrayLike, pseudo_count: float = PSEUDO_COUNT) -> FloatArray:
    """Window shares with ``pseudo_count`` samples added to every bin."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("window histogram must be a non-empty vector of counts >= 0")
    out: FloatArray = (c + pseudo_count) / (c.sum() + pseudo_count * c.size)
    return out


def psi(
    current: npt.ArrayLike,
    baseline: npt.ArrayLike,
    pseudo_count: float = PSEUDO_COUNT,
    epsilon: float = EPSILON,
) -> float:
    """Population stability index of window counts against baseline shares:
    the symmetric KL divergence sum((q-p)·ln(q/p)), with empty bins smoothed.

    Rule of thumb from credit scoring: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted;
    our thresholds come from measured false-alarm rates instead (docs/drift.md).
    """
    q = smoothed_counts(current, pseudo_count)
    p = _as_probs(baseline, epsilon)
    if q.size != p.size:
        raise ValueError(f"histograms differ in size: {q.size} bins vs {p.size}")
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(current: npt.ArrayLike, baseline: npt.ArrayLike, epsilon: float = 0.0) -> float:
    """Jensen-Shannon distance in base 2 (0 = same, 1 = disjoint); finite without smoothing."""
    q, p = _pair(current, baseline, epsilon)
    m = 0.5 * (q + p)

    def _kl(a: FloatArray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    js = 0.5 * _kl(q) + 0.5 * _kl(p)
    return float(np.sqrt(max(js, 0.0)))


def bin_centres(edges: Sequence[float] | FloatArray) -> FloatArray:
    """Where a binned Wasserstein distance places each bin's mass: its mid-point, except
    that the two outer bins (which run to the training minimum and maximum) sit half a
    neighbouring bin width beyond their inner edge, so one extreme reading at training
    time cannot make every small tail change look large."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError("need at least two bin edges")
    centres: FloatArray = 0.5 * (e[:-1] + e[1:])
    if e.size >= 4:
        centres[0] = max(e[0], e[1] - 0.5 * (e[2] - e[1]))
        centres[-1] = min(e[-1], e[-2] + 0.5 * (e[-2] - e[-3]))
    return centres


def wasserstein(
    current: npt.ArrayLike,
    baseline: npt.ArrayLike,
    edges: Sequence[float] | FloatArray,
    scale: float = 1.0,
) -> float:
    """Earth mover's distance between two histograms on the same bins, divided by ``scale``.

    Each bin's mass sits at its centre, so the cost is O(bins) per test whatever the
    window size; dividing by the baseline's standard deviation makes one threshold fit
    features with different units.
    """
    q, p = _pair(current, baseline, 0.0)
    centres = bin_centres(edges)
    if centres.size != q.size:
        raise ValueError(f"{len(centres) + 1} edges do not fit {q.size} bins")
    gaps = np.diff(centres)
    distance = float(np.sum(np.abs(np.cumsum(q - p)[:-1]) * gaps))
    return distance / scale if scale > 0 else distance


def relative_shift(current: float, baseline: float) -> float:
    """How much more (or less) often something happens than on validation: |cur/base - 1|."""
    if baseline <= 0:
        raise ValueError("baseline share must be positive")
    return abs(current / baseline - 1.0)


class HistogramSet:
    """Baseline histograms of many features padded into one matrix, so a window test
    scores every feature in a few array operations instead of a Python loop."""

    def __init__(
        self,
        edges: Sequence[Sequence[float]],
        probs: Sequence[Sequence[float]],
        scales: Sequence[float],
        pseudo_count: float = PSEUDO_COUNT,
        epsilon: float = EPSILON,
    ) -> None:
        k = len(edges)
        self.bins = np.array([len(p) for p in probs], dtype=np.int64)
        width = int(self.bins.max())
        self.mask = np.arange(width)[None, :] < self.bins[:, None]
        self.probs = np.zeros((k, width))
        self.centres = np.zeros((k, width))
        for i in range(k):
            self.probs[i, : self.bins[i]] = _as_probs(probs[i], 0.0)
            self.centres[i, : self.bins[i]] = bin_centres(edges[i])
        self.gaps = np.where(self.mask[:, 1:], np.diff(self.centres, axis=1), 0.0)
        self.scales = np.where(np.asarray(scales) > 0, np.asarray(scales, dtype=np.float64), 1.0)
        self.pseudo_count = pseudo_count
        self.epsilon = epsilon
        self._smoothed_base = self._smooth(self.probs)

    def _normalise(self, counts: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        c = np.asarray(counts, dtype=np.float64)
        totals = c.sum(axis=1)
        ok = totals > 0
        q: FloatArray = c / np.where(ok, totals, 1.0)[:, None]
        return q, ok

    def _smooth(self, probs: FloatArray) -> FloatArray:
        e = self.epsilon
        out: FloatArray = np.where(self.mask, (probs + e) / (1 + e * self.bins[:, None]), 1.0)
        return out

    def psi(self, counts: npt.ArrayLike, probs: FloatArray | None = None) -> FloatArray:
        """PSI per feature (NaN for a feature with an empty window); ``probs`` replaces the
        baseline shares for this test (a seasonal blend on the same bins)."""
        c = np.asarray(counts, dtype=np.float64)
        totals = c.sum(axis=1)
        ok = totals > 0
        a = self.pseudo_count
        qs = np.where(self.mask, (c + a) / (totals + a * self.bins)[:, None], 1.0)
        ps = self._smoothed_base if probs is None else self._smooth(probs)
        out: FloatArray = np.where(self.mask, (qs - ps) * np.log(qs / ps), 0.0).sum(axis=1)
        return np.where(ok, out, np.nan)

    def jensen_shannon(self, counts: npt.ArrayLike, probs: FloatArray | None = None) -> FloatArray:
        q, ok = self._normalise(counts)
        p = self.probs if probs is None else probs
        m = 0.5 * (q + p)
        with np.errstate(divide="ignore", invalid="ignore"):
            kq = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
            kp = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        out: FloatArray = np.sqrt(np.maximum(0.5 * kq + 0.5 * kp, 0.0))
        return np.where(ok, out, np.nan)

    def wasserstein(
        self,
        counts: npt.ArrayLike,
        probs: FloatArray | None = None,
        scales: FloatArray | None = None,
    ) -> FloatArray:
        """Binned Wasserstein per feature, in units of each baseline's standard deviation
        (``probs`` and ``scales`` replace the baseline's for this test)."""
        q, ok = self._normalise(counts)
        p = self.probs if probs is None else probs
        s = self.scales if scales is None else np.where(scales > 0, scales, 1.0)
        cdf = np.cumsum(q - p, axis=1)[:, :-1]
        out: FloatArray = (np.abs(cdf) * self.gaps).sum(axis=1) / s
        return np.where(ok, out, np.nan)
