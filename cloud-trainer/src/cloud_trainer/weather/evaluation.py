"""Binary classification quality, honest about imbalance and calibration, with its plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.weather.dataset import LABELS

CALIBRATION_BINS = 10


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_metrics(
    y_true: npt.NDArray[np.int64],
    y_pred: npt.NDArray[np.int64],
    prob_positive: npt.NDArray[np.float64] | None = None,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1, confusion, ROC-AUC and calibration.

    ``prob_positive`` is optional: hard-label baselines (persistence) have no scores, so
    their ROC-AUC and calibration are absent rather than invented.
    """
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = int(y_true.size)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class: dict[str, dict[str, float]] = {}
    for k, label in enumerate(labels):
        tp = float(confusion[k, k])
        precision = _safe_div(tp, float(confusion[:, k].sum()))
        recall = _safe_div(tp, float(confusion[k, :].sum()))
        f1 = _safe_div(2 * precision * recall, precision + recall)
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": float(confusion[k, :].sum()),
        }
    metrics: dict[str, Any] = {
        "n_rows": n,
        "accuracy": _safe_div(float(np.trace(confusion)), float(n)),
        "macro_precision": float(np.mean([c["precision"] for c in per_class.values()])),
        "macro_recall": float(np.mean([c["recall"] for c in per_class.values()])),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
    if prob_positive is not None:
        p = np.asarray(prob_positive, dtype=np.float64)
        both = np.unique(y_true).size == 2
        metrics["roc_auc"] = float(roc_auc_score(y_true, p)) if both else math.nan
        metrics["brier"] = float(np.mean((p - y_true) ** 2)) if n else math.nan
        metrics["calibration"] = calibration_table(y_true, p)
        metrics["ece"] = expected_calibration_error(metrics["calibration"], n)
    return metrics


def calibration_table(
    y_true: npt.NDArray[np.int64], prob: npt.NDArray[np.float64], bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Per equal-width probability bin: mean predicted probability, observed rate, count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if count:
            table.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "mean_predicted": float(prob[mask].mean()),
                    "observed": float(y_true[mask].mean()),
                    "count": float(count),
                }
            )
    return table


def expected_calibration_error(table: list[dict[str, float]], n: int) -> float:
    if not n:
        return math.nan
    return float(sum(r["count"] * abs(r["mean_predicted"] - r["observed"]) for r in table) / n)


def best_threshold(y_true: npt.NDArray[np.int64], prob: npt.NDArray[np.float64]) -> float:
    """Decision threshold on P(rain) maximising macro-F1 (chosen on validation, never test)."""
    candidates = np.round(np.arange(0.20, 0.81, 0.02), 2)
    scores = [
        classification_metrics(y_true, (prob >= t).astype(np.int64))["macro_f1"] for t in candidates
    ]
    return float(candidates[int(np.argmax(scores))])


def save_plots(
    out_dir: Path, y_true: npt.NDArray[np.int64], prob: npt.NDArray[np.float64], threshold: float
) -> list[Path]:
    """Confusion matrix, ROC curve and reliability diagram as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(y_true, (prob >= threshold).astype(np.int64), prob)
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4))
    confusion = np.asarray(metrics["confusion_matrix"])
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set_xticks([0, 1], LABELS)
    ax.set_yticks([0, 1], LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("observed in 4 h")
    ax.set_title(f"Confusion (threshold {threshold:.2f})")
    paths.append(_save(fig, out_dir / "confusion_matrix.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    if np.unique(y_true).size == 2:
        fpr, tpr, _ = roc_curve(y_true, prob)
        ax.plot(fpr, tpr, label=f"AUC {metrics['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC: rain in 4 h")
    ax.legend(loc="lower right")
    paths.append(_save(fig, out_dir / "roc.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    table = metrics["calibration"]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.plot([r["mean_predicted"] for r in table], [r["observed"] for r in table], marker="o")
    ax.set_xlabel("predicted P(rain)")
    ax.set_ylabel("observed rain rate")
    ax.set_title(f"Reliability (ECE {metrics['ece']:.3f})")
    paths.append(_save(fig, out_dir / "reliability.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
