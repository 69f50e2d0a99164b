"""Evaluation pictures: the confusion matrix and a contact sheet of the most confident mistakes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cloud_trainer.catdog.evaluate import Evaluation, Predictions
from cloud_trainer.catdog.ingest import ImageRejected, read_image

TILE = 160
CAPTION = 34


def confusion_png(evaluation: Evaluation, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(evaluation.confusion)
    labels = evaluation.labels
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(labels), 1.4 + 1.0 * len(labels)), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > limit else "black")
    ax.set_title(title or f"balanced accuracy {evaluation.balanced_accuracy:.3f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def worst_errors_png(
    predictions: Predictions, labels: list[str], path: Path, limit: int = 16
) -> tuple[Path, int]:
    """Mistakes ordered by the confidence of the wrong answer; returns the path and the count.

    With no mistakes the sheet says so, so the artefact always exists for the run record.
    """
    wrong = np.flatnonzero(predictions.y_pred != predictions.y_true)
    confidence = predictions.probabilities.max(axis=1)
    order = wrong[np.argsort(-confidence[wrong])][:limit]
    cols = max(1, min(4, len(order)))
    rows = max(1, -(-len(order) // cols))
    sheet = np.full((rows * (TILE + CAPTION), cols * TILE, 3), 255, np.uint8)
    if len(order) == 0:
        cv2.putText(sheet, "no errors", (10, TILE // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0))
    for k, i in enumerate(order):
        record = predictions.records[i]
        try:
            tile = cv2.resize(read_image(record.path), (TILE, TILE), interpolation=cv2.INTER_AREA)
        except ImageRejected:
            tile = np.full((TILE, TILE, 3), 127, np.uint8)
        r, c = divmod(k, cols)
        y0, x0 = r * (TILE + CAPTION), c * TILE
        sheet[y0 : y0 + TILE, x0 : x0 + TILE] = tile
        true, pred = labels[predictions.y_true[i]], labels[predictions.y_pred[i]]
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(
            sheet,
            f"{true} -> {pred} {confidence[i]:.2f}",
            (x0 + 3, y0 + TILE + 13),
            font,
            0.4,
            (0, 0, 200),
            1,
            cv2.LINE_AA,
        )
        cv2.putText(
            sheet,
            record.path.name[:26],
            (x0 + 3, y0 + TILE + 28),
            font,
            0.35,
            (60, 60, 60),
            1,
            cv2.LINE_AA,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")
    return path, len(wrong)
