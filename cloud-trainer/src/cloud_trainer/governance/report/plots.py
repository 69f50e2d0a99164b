"""ROC and reliability plots for models whose pipeline did not store them (camera model)."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt

BINS = 10


def _png(fig: object) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buffer, format="png", dpi=90)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return buffer.getvalue()


def roc_png(y: npt.NDArray[np.int64], prob: npt.NDArray[np.float64], positive: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    if np.unique(y).size == 2:
        fpr, tpr, _ = roc_curve(y, prob)
        ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, prob):.3f}")
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC: {positive}")
    return _png(fig)


def reliability_png(
    y: npt.NDArray[np.int64], prob: npt.NDArray[np.float64], positive: str
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, 1.0, BINS + 1)
    index = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, BINS - 1)
    xs, ys = [], []
    for b in range(BINS):
        mask = index == b
        if mask.any():
            xs.append(float(prob[mask].mean()))
            ys.append(float(y[mask].mean()))
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel(f"predicted P({positive})")
    ax.set_ylabel(f"observed {positive} rate")
    ax.set_title("Reliability")
    return _png(fig)
