"""Drift metrics agree with scipy (the reference implementation) on the same windows."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, wasserstein_distance

from edge_agent.drift.baseline import bin_counts, histogram_baseline
from edge_agent.drift.config import WindowConfig
from edge_agent.drift.metrics import (
    EPSILON,
    PSEUDO_COUNT,
    HistogramSet,
    bin_centres,
    jensen_shannon,
    psi,
    smoothed_counts,
    wasserstein,
)
from edge_agent.drift.windows import HistogramWindow

counts_strategy = st.lists(st.integers(0, 50), min_size=2, max_size=12).filter(lambda c: sum(c) > 0)


def _windows(rng: np.random.Generator):
    """Baseline N(0,1); windows stationary, shifted, scaled, and with empty bins."""
    base = histogram_baseline(rng.normal(size=5000), bins=10)
    windows = [
        rng.normal(size=168),
        rng.normal(0.5, 1, size=48),
        rng.normal(1.0, 1, size=24),
        rng.normal(0, 2, size=100),
        rng.normal(3, 0.1, size=30),  # nearly all in the top bin: empty bins elsewhere
    ]
    return base, windows


def test_metrics_match_scipy_on_the_same_windows() -> None:
    rng = np.random.default_rng(11)
    base, windows = _windows(rng)
    p = np.asarray(base.probs)
    q_base = (p + EPSILON) / (1 + EPSILON * p.size)
    centres = bin_centres(base.edges)
    for w in windows:
        counts = bin_counts(w, base.edges)
        q = counts / counts.sum()
        assert jensen_shannon(counts, p) == pytest.approx(jensenshannon(q, p, base=2), abs=1e-12)
        smooth = smoothed_counts(counts)
        assert psi(counts, p) == pytest.approx(
            entropy(smooth, q_base) + entropy(q_base, smooth), rel=1e-9
        )
        ref = wasserstein_distance(centres, centres, u_weights=q, v_weights=p)
        assert wasserstein(counts, p, base.edges, scale=base.std) == pytest.approx(
            ref / base.std, rel=1e-9
        )


def test_binned_wasserstein_tracks_scipy_on_raw_values() -> None:
    # The device bins to keep each test O(bins): close to scipy on raw values for the
    # shifts that matter (up to 1σ), then it saturates as mass piles into the outer bins.
    rng = np.random.default_rng(5)
    train = rng.normal(size=20_000)
    base = histogram_baseline(train, bins=10)
    previous = -1.0
    for shift in (0.0, 0.5, 1.0, 2.0):
        w = rng.normal(shift, 1, size=2000)
        ours = wasserstein(bin_counts(w, base.edges), base.probs, base.edges, scale=base.std)
        raw = wasserstein_distance(w, train) / base.std
        assert ours <= raw + 0.01
        if shift <= 1.0:
            assert ours == pytest.approx(raw, abs=0.2)
        assert ours > previous
        previous = ours


def test_vectorised_histogram_set_equals_the_scalar_metrics() -> None:
    rng = np.random.default_rng(3)
    bases = [histogram_baseline(rng.normal(size=2000), bins=b) for b in (10, 6, 3)]
    hs = HistogramSet([b.edges for b in bases], [b.probs for b in bases], [b.std for b in bases])
    window = HistogramWindow(WindowConfig(size=64), [b.edges for b in bases])
    from datetime import UTC, datetime

    for i in range(64):
        window.add(datetime.fromtimestamp(1e9 + i, UTC), rng.normal(0.7, 1.3, size=3))
    matrix = window.count_matrix()
    for i, b in enumerate(bases):
        c = window.counts(i)
        assert hs.psi(matrix)[i] == pytest.approx(psi(c, b.probs))
        assert hs.jensen_shannon(matrix)[i] == pytest.approx(jensen_shannon(c, b.probs))
        assert hs.wasserstein(matrix)[i] == pytest.approx(
            wasserstein(c, b.probs, b.edges, scale=b.std)
        )


@settings(max_examples=200, deadline=None)
@given(counts_strategy, counts_strategy)
def test_properties_against_scipy(a: list[int], b: list[int]) -> None:
    n = min(len(a), len(b))
    ca, cb = np.asarray(a[:n], float), np.asarray(b[:n], float)
    if ca.sum() == 0 or cb.sum() == 0:
        return
    js = jensen_shannon(ca, cb)
    assert js == pytest.approx(jensenshannon(ca / ca.sum(), cb / cb.sum(), base=2), abs=1e-9)
    assert 0.0 <= js <= 1.0
    assert jensen_shannon(ca, cb) == pytest.approx(jensen_shannon(cb, ca))
    value = psi(ca, cb / cb.sum())
    assert np.isfinite(value) and value >= 0.0
    if cb.min() > 0:
        assert psi(cb, cb / cb.sum(), pseudo_count=0.0, epsilon=0.0) == pytest.approx(
            0.0, abs=1e-12
        )


def test_empty_bins_stay_finite_and_bad_histograms_are_named() -> None:
    base = [0.25, 0.25, 0.25, 0.25]
    assert np.isfinite(psi([10, 0, 0, 0], base))
    assert psi([10, 0, 0, 0], base, pseudo_count=PSEUDO_COUNT) < psi([10, 0, 0, 0], base, 0.01)
    with pytest.raises(ValueError, match="differ in size"):
        psi([1, 2, 3], base)
    with pytest.raises(ValueError, match="empty"):
        jensen_shannon([0, 0, 0, 0], base)
    with pytest.raises(ValueError, match="non-negative"):
        jensen_shannon([1, -1, 0, 0], base)
    with pytest.raises(ValueError, match="counts >= 0"):
        psi([1, float("nan"), 0, 0], base)
