"""Which month's baseline a window is compared with: each sample weighs the two calendar
months whose mid-points enclose it, and a window's reference is the blend of its samples.

Linear weights between month mid-points follow the seasonal cycle smoothly: a window on
the last days of March is compared mostly with March and partly with April, never with a
baseline that jumps at midnight on the 1st. A window straddling a month boundary needs no
special case: its samples carry their own weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.protocol.bundle import MONTHS, SeasonalHistogram

FloatArray = npt.NDArray[np.float64]
_DAY_S = 86_400.0


def month_weights(epochs: npt.ArrayLike) -> FloatArray:
    """Summed weight of each calendar month (UTC, January first) over ``epochs`` (seconds).

    A sample at the middle of a month weighs 1 on that month; elsewhere it splits between
    the two nearest month mid-points in proportion to closeness. The weights sum to the
    number of samples.
    """
    t = np.asarray(epochs, dtype=np.float64).reshape(-1)
    if t.size == 0:
        return np.zeros(MONTHS)
    if not np.all(np.isfinite(t)):
        raise ValueError("sample timestamps must be finite")
    days = np.floor(t / _DAY_S).astype("datetime64[D]")
    month = days.astype("datetime64[M]")
    start = month.astype("datetime64[D]").astype(np.int64) * _DAY_S
    length = ((month + 1).astype("datetime64[D]").astype(np.int64) * _DAY_S) - start
    position = (month.astype(np.int64) % MONTHS) + (t - start) / length - 0.5
    low = np.floor(position)
    upper = position - low
    lo = low.astype(np.int64) % MONTHS
    hi = (lo + 1) % MONTHS
    out: FloatArray = np.bincount(lo, weights=1.0 - upper, minlength=MONTHS).astype(np.float64)
    out += np.bincount(hi, weights=upper, minlength=MONTHS)
    return out


class SeasonalHistograms:
    """Per-month histograms of many features as one array, blended per window test.

    ``blend(weights)`` returns bin shares and standard deviations for every feature in a
    few array operations: the mixture of the months with the window's month weights.
    """

    def __init__(self, baselines: Sequence[SeasonalHistogram]) -> None:
        if not baselines:
            raise ValueError("need at least one seasonal histogram")
        k = len(baselines)
        self.bins = np.array([len(b.edges) - 1 for b in baselines], dtype=np.int64)
        width = int(self.bins.max())
        self.probs = np.zeros((MONTHS, k, width))
        self.mean = np.zeros((MONTHS, k))
        self.second = np.zeros((MONTHS, k))
        for i, b in enumerate(baselines):
            p = np.asarray(b.probs, dtype=np.float64)
            self.probs[:, i, : self.bins[i]] = p / p.sum(axis=1, keepdims=True)
            mu = np.asarray(b.mean, dtype=np.float64)
            sd = np.asarray(b.std, dtype=np.float64)
            self.mean[:, i] = mu
            self.second[:, i] = sd * sd + mu * mu

    def blend(self, weights: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Bin shares [features × bins], mean and std per feature of the months mixed by
        ``weights``: the distribution a window with these month weights should show."""
        total = float(weights.sum())
        if total <= 0:
            raise ValueError("a blend needs positive month weights")
        w = weights / total
        probs: FloatArray = np.tensordot(w, self.probs, axes=1)
        mean = w @ self.mean
        var = np.maximum(w @ self.second - mean * mean, 0.0)
        return probs, mean, np.sqrt(var)


def blend_shares(
    months: Sequence[Mapping[str, float]], weights: FloatArray, labels: Sequence[str]
) -> dict[str, float]:
    """Per-label share of the months mixed by ``weights`` (e.g. a week's class ratio)."""
    total = float(weights.sum())
    if total <= 0:
        raise ValueError("a blend needs positive month weights")
    return {
        label: float(sum(w * m.get(label, 0.0) for w, m in zip(weights, months, strict=True)))
        / total
        for label in labels
    }
