"""Building training-time baselines (used by the cloud at export, and by tests)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.protocol.bundle import FeatureBaseline, HistogramBaseline


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
