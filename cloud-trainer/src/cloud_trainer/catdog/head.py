"""Linear classification head on frozen features: class-balanced logistic regression, C on val."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class LinearHead:
    """A Dense layer's weights (kernel: dim x classes, bias: classes) and how it was chosen."""

    kernel: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    c: float
    val_balanced_accuracy: float

    def logits(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(features @ self.kernel + self.bias, dtype=np.float32)

    def probabilities(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        z = self.logits(features)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


def _as_dense(
    coef: npt.NDArray[np.float64],
    intercept: npt.NDArray[np.float64],
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Fold the standardisation into the weights; a binary model becomes a 2-way softmax."""
    w = coef / scale  # (k, d)
    b = intercept - w @ mean
    if w.shape[0] == 1:  # softmax([-z/2, z/2]) == [1 - sigmoid(z), sigmoid(z)]
        w = np.vstack([-w / 2, w / 2])
        b = np.array([-b[0] / 2, b[0] / 2])
    return w.T.astype(np.float32), b.astype(np.float32)


def fit_linear_head(
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.int64],
    x_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.int64],
    n_classes: int,
    c_grid: tuple[float, ...] = C_GRID,
    seed: int = 0,
) -> LinearHead:
    """Best of ``c_grid`` by validation balanced accuracy (ties: lower validation log-loss)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, log_loss

    if set(np.unique(y_train)) != set(range(n_classes)):
        raise ValueError(f"training data must hold all {n_classes} classes")
    mean = x_train.mean(axis=0).astype(np.float64)
    scale = x_train.std(axis=0).astype(np.float64)
    scale[scale < 1e-6] = 1.0
    best: tuple[float, float, LinearHead] | None = None
    for c in c_grid:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
        model.fit((x_train - mean) / scale, y_train)
        kernel, bias = _as_dense(model.coef_, model.intercept_, mean, scale)
        head = LinearHead(kernel, bias, c, 0.0)
        probs = head.probabilities(x_val)
        bal = float(balanced_accuracy_score(y_val, probs.argmax(axis=1)))
        loss = float(log_loss(y_val, probs, labels=list(range(n_classes))))
        log.debug("head C=%s: val balanced accuracy %.4f, log-loss %.4f", c, bal, loss)
        if best is None or (bal, -loss) > (best[0], -best[1]):
            best = (bal, loss, LinearHead(kernel, bias, c, bal))
    assert best is not None
    log.info("linear head: C=%s, val balanced accuracy %.4f", best[2].c, best[0])
    return best[2]
