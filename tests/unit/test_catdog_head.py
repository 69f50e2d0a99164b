"""The linear head folded into Dense weights, and the int8 accuracy-drop rule."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_trainer.catdog.head import fit_linear_head
from cloud_trainer.export.quantize import check_accuracy_drop


def _blobs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(k).normal(0, 3, size=(k, 16))  # same classes for all sets
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    x = centres[y] + rng.normal(0, 1.5, size=(n, 16)) + 5.0  # offset: scaling must be folded
    return x.astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("k", [2, 3])
def test_folded_head_matches_logistic_regression(k: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(400, k, seed=k)
    xv, yv = _blobs(200, k, seed=k + 10)
    head = fit_linear_head(x, y, xv, yv, k, c_grid=(0.1,))
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000).fit(
        scaler.transform(x), y
    )
    expected = reference.predict_proba(scaler.transform(xv))
    np.testing.assert_allclose(head.probabilities(xv), expected, atol=1e-4)
    assert head.kernel.shape == (16, k) and head.bias.shape == (k,)
    assert head.val_balanced_accuracy > 0.8


def test_head_needs_every_class_in_training() -> None:
    x, y = _blobs(50, 2, seed=1)
    with pytest.raises(ValueError, match="all 3 classes"):
        fit_linear_head(x, y, x, y, 3)


def test_accuracy_drop_rule() -> None:
    assert check_accuracy_drop("balanced_accuracy", 0.97, 0.962).passed
    assert check_accuracy_drop("balanced_accuracy", 0.97, 0.98).passed  # int8 better: fine
    failed = check_accuracy_drop("balanced_accuracy", 0.97, 0.955)
    assert not failed.passed and failed.drop == pytest.approx(0.015)
    assert not check_accuracy_drop("balanced_accuracy", 0.97, float("nan")).passed
