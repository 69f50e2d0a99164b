"""Building training-time baselines (used by the cloud at export, and by tests)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.protocol.bundle import (
    MONTHS,
    FeatureBaseline,
    HistogramBaseline,
    SeasonalFeature,
    SeasonalHistogram,
)


def histogram_baseline(values: npt.ArrayLike, bins: int = 10) -> HistogramBaseline:
    """Quantile-binned histogram of ``values`` (NaNs ignored); equal-mass bins by design.

    Ties (e.g. a mostly-constant feature) collapse duplicate edges, so fewer bins result.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("cannot build a baseline from no finite values")
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    counts = bin_counts(x, edges)
    probs = counts / counts.sum()
    return HistogramBaseline(
        edges=[float(e) for e in edges],
        probs=[float(p) for p in probs],
        mean=float(x.mean()),
        std=float(x.std()),
        n=int(x.size),
    )


def capture_threshold(probabilities: npt.ArrayLike, quantile: float) -> float:
    """The ``quantile`` of the top-class probability over held-out outputs: a frame whose
    confidence is below it is as unsure as the least sure ``quantile`` share of held-out
    data. ``probabilities`` is (rows, labels), or (rows,) of top probabilities already.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    p = np.asarray(probabilities, dtype=np.float64)
    top = p.max(axis=1) if p.ndim == 2 else p.ravel()
    top = top[np.isfinite(top)]
    if top.size == 0:
        raise ValueError("cannot measure a capture threshold on no finite probabilities")
    if top.min() <= 0 or top.max() > 1 + 1e-6:
        raise ValueError("top-class probabilities must lie in (0, 1]")
    # float32 softmax may round a hair above 1; the spec field allows at most 1.
    return min(float(np.quantile(top, quantile)), 1.0)


def bin_counts(
    values: npt.NDArray[np.float64], edges: Sequence[float] | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Counts per bin; out-of-range values go to the first or last bin."""
    e = np.asarray(edges, dtype=np.float64)
    idx = np.clip(np.searchsorted(e, values, side="right") - 1, 0, e.size - 2)
    return np.bincount(idx, minlength=e.size - 1).astype(np.float64)


def feature_baselines(
    columns: Mapping[str, npt.ArrayLike], bins: int = 10
) -> list[FeatureBaseline]:
    """One named histogram baseline per column."""
    out = []
    for name, values in columns.items():
        h = histogram_baseline(values, bins)
        out.append(FeatureBaseline(name=name, **h.model_dump()))
    return out


def class_ratio(labels: Iterable[str], all_labels: Sequence[str]) -> dict[str, float]:
    """Share of each label among ``labels`` (every label present, possibly 0)."""
    items = list(labels)
    total = max(len(items), 1)
    return {label: sum(1 for x in items if x == label) / total for label in all_labels}


def _months_of(hours: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Calendar month (0 = January, UTC) of each timestamp (numpy datetime64)."""
    t = np.asarray(hours)
    if not np.issubdtype(t.dtype, np.datetime64):
        raise ValueError(f"expected datetime64 timestamps, got {t.dtype}")
    out: npt.NDArray[np.int64] = t.astype("datetime64[M]").astype(np.int64) % MONTHS
    return out


def _pool_thin(
    per_month: npt.NDArray[np.float64], n: npt.NDArray[np.float64], min_rows: int
) -> npt.NDArray[np.float64]:
    """Sums per month, with a thin month borrowing half of each neighbour and, if still
    thin, the whole period: a month seen a few days only must not get a jagged baseline."""
    pooled = per_month.copy()
    total = per_month.sum(axis=0)
    for m in range(MONTHS):
        if n[m] >= min_rows:
            continue
        around = per_month[m] + 0.5 * (per_month[(m - 1) % MONTHS] + per_month[(m + 1) % MONTHS])
        near = n[m] + 0.5 * (n[(m - 1) % MONTHS] + n[(m + 1) % MONTHS])
        pooled[m] = around if near >= min_rows else total
    return pooled


# Finer bins in the tails: the months at either end of a feature's range live there.
TAIL_QUANTILES = (0.005, 0.01, 0.02, 0.98, 0.99, 0.995)


def shared_edges(values: npt.ArrayLike, bins: int) -> npt.NDArray[np.float64]:
    """Bin edges every month shares: quantiles of the whole period, or the mid-points
    between the distinct values of a feature with few (a 0/1 flag gets two bins, not one)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("cannot build a baseline from no finite values")
    distinct = np.unique(x)
    if distinct.size == 1:
        return np.array([distinct[0] - 0.5, distinct[0] + 0.5])
    if distinct.size <= bins:
        mids = 0.5 * (distinct[1:] + distinct[:-1])
        return np.concatenate([[distinct[0]], mids, [distinct[-1]]])
    levels = np.union1d(np.linspace(0, 1, bins + 1), TAIL_QUANTILES)
    core = np.unique(np.quantile(x, levels))
    # Empty bins past the training range: an offset that carries a month beyond anything
    # seen must still move mass a measurable distance, not pile into a wide outer bin.
    step = (np.quantile(x, 0.99) - np.quantile(x, 0.01)) / bins
    if step <= 0:
        return core
    outside_low = core[0] - step * np.array([2.0, 1.0])
    outside_high = core[-1] + step * np.array([1.0, 2.0])
    return np.concatenate([outside_low, core, outside_high])


def _tidy(values: npt.ArrayLike, digits: int = 6) -> list[float]:
    """Round for the ONNX metadata: six significant digits keep the spec small."""
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def seasonal_histogram(
    hours: npt.ArrayLike, values: npt.ArrayLike, bins: int = 20, min_rows: int = 240
) -> SeasonalHistogram:
    """Per-month histograms of ``values`` on bins shared by all months (NaNs ignored)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    months = _months_of(hours).ravel()
    if months.size != x.size:
        raise ValueError(f"{months.size} timestamps for {x.size} values")
    keep = np.isfinite(x)
    x, months = x[keep], months[keep]
    edges = shared_edges(x, bins)
    k = edges.size - 1
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, k - 1)
    counts = np.zeros((MONTHS, k))
    np.add.at(counts, (months, idx), 1.0)
    n = counts.sum(axis=1)
    moments = np.stack(
        [np.bincount(months, weights=x**p, minlength=MONTHS) for p in (1, 2)], axis=1
    ).astype(np.float64)
    pooled = _pool_thin(np.concatenate([counts, moments], axis=1), n, min_rows)
    counts, moments = pooled[:, :k], pooled[:, k:]
    rows = counts.sum(axis=1)
    mean = moments[:, 0] / rows
    std = np.sqrt(np.maximum(moments[:, 1] / rows - mean**2, 0.0))
    probs = np.round(counts / rows[:, None], 6)
    probs /= probs.sum(axis=1, keepdims=True)
    return SeasonalHistogram(
        edges=_tidy(edges, 9),
        probs=[[float(p) for p in row] for row in probs],
        mean=_tidy(mean),
        std=_tidy(std),
        n=[int(v) for v in n],
    )


def seasonal_features(
    hours: npt.ArrayLike, columns: Mapping[str, npt.ArrayLike], bins: int = 20, min_rows: int = 240
) -> list[SeasonalFeature]:
    """One named seasonal histogram per column."""
    out = []
    for name, values in columns.items():
        h = seasonal_histogram(hours, values, bins, min_rows)
        out.append(SeasonalFeature(name=name, **h.model_dump()))
    return out


def seasonal_class_ratio(
    hours: npt.ArrayLike,
    predicted: Sequence[str],
    all_labels: Sequence[str],
    min_rows: int = 240,
    window_hours: int = 168,
) -> tuple[list[dict[str, float]], float]:
    """Share of each predicted label per month, and how much more a ``window_hours`` block's
    share varies than binomial sampling says (weather comes in spells of similar hours)."""
    t = np.asarray(hours).astype("datetime64[h]")
    months = _months_of(t)
    index = {label: i for i, label in enumerate(all_labels)}
    codes = np.array([index[p] for p in predicted], dtype=np.int64)
    if codes.size != months.size or codes.size == 0:
        raise ValueError(f"{months.size} timestamps for {codes.size} predictions")
    onehot = np.eye(len(all_labels))[codes]
    counts = np.zeros((MONTHS, len(all_labels)))
    np.add.at(counts, months, onehot)
    n = counts.sum(axis=1)
    pooled = _pool_thin(counts, n, min_rows)
    shares = pooled / pooled.sum(axis=1, keepdims=True)
    ratios = [
        {label: round(float(shares[m, i]), 6) for i, label in enumerate(all_labels)}
        for m in range(MONTHS)
    ]
    block = (t.astype(np.int64) - t.astype(np.int64).min()) // window_hours
    observed, expected = [], []
    for b in np.unique(block):
        inside = block == b
        if inside.sum() < window_hours // 2:
            continue
        share = onehot[inside].mean(axis=0)
        base = shares[months[inside]].mean(axis=0)
        observed.append((share - base) ** 2)
        expected.append(base * (1 - base) / inside.sum())
    if not observed:
        return ratios, 1.0
    obs, exp = np.mean(observed, axis=0), np.mean(expected, axis=0)
    common = exp > 1e-9
    inflation = float((obs[common] / exp[common]).max()) if common.any() else 1.0
    return ratios, round(max(inflation, 1.0), 3)


def monthly_rate(hours: npt.ArrayLike, flags: npt.ArrayLike, min_rows: int = 240) -> list[float]:
    """Share of true ``flags`` per month (e.g. forecast errors on held-out rows)."""
    f = np.asarray(flags, dtype=np.float64).ravel()
    months = _months_of(hours).ravel()
    if months.size != f.size:
        raise ValueError(f"{months.size} timestamps for {f.size} flags")
    sums = np.stack([np.bincount(months, weights=f, minlength=MONTHS)], axis=1)
    n = np.bincount(months, minlength=MONTHS).astype(np.float64)
    pooled = _pool_thin(np.concatenate([sums, n[:, None]], axis=1), n, min_rows)
    return [round(float(s / max(c, 1.0)), 6) for s, c in pooled]
