"""Scoring an exported forecaster on any station history, exactly as a device would feed it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.export import load_session, spec_of_session
from cloud_trainer.weather.dataset import LABELS, POSITIVE_LABEL, LabelledRows, labelled_rows
from cloud_trainer.weather.evaluation import classification_metrics
from cloud_trainer.weather.ingest import DataReport, WeatherDataError, load_station_history
from edge_agent.features.weather import FEATURE_NAMES, FEATURE_SET
from edge_agent.protocol.bundle import ModelSpec, TabularPreprocessing

_BATCH = 16384


class IncompatibleModelError(ValueError):
    """The model's spec does not describe a weather forecaster this code can feed."""


@dataclass(frozen=True)
class WeatherScorer:
    """An onnxruntime session plus what its spec says about columns, labels and threshold."""

    session: Any
    spec: ModelSpec
    columns: npt.NDArray[np.int64]  # positions in FEATURE_NAMES, in the model's input order
    positive_index: int
    threshold: float
    mean: npt.NDArray[np.float32] | None
    std: npt.NDArray[np.float32] | None

    @classmethod
    def load(cls, path: Path) -> WeatherScorer:
        session = load_session(path)
        spec = spec_of_session(session, str(path))
        pre = spec.preprocessing
        if not isinstance(pre, TabularPreprocessing) or pre.feature_set != FEATURE_SET:
            raise IncompatibleModelError(
                f"{path}: model {spec.name} expects {getattr(pre, 'feature_set', pre.kind)!r} "
                f"inputs, not {FEATURE_SET!r}"
            )
        unknown = [f for f in pre.features if f not in FEATURE_NAMES]
        if unknown:
            raise IncompatibleModelError(f"{path}: unknown features {unknown} in the model spec")
        if len(spec.inputs) != 1:
            raise IncompatibleModelError(
                f"{path}: expected one input tensor, spec has {len(spec.inputs)}"
            )
        positive = spec.positive_label or POSITIVE_LABEL
        if positive not in spec.labels:
            raise IncompatibleModelError(
                f"{path}: positive label {positive!r} not in {spec.labels}"
            )
        normalise_here = not pre.normalised_in_graph
        return cls(
            session=session,
            spec=spec,
            columns=np.asarray([FEATURE_NAMES.index(f) for f in pre.features], dtype=np.int64),
            positive_index=spec.labels.index(positive),
            threshold=spec.decision_threshold if spec.decision_threshold is not None else 0.5,
            mean=np.asarray(pre.mean, dtype=np.float32) if normalise_here else None,
            std=np.asarray(pre.std, dtype=np.float32) if normalise_here else None,
        )

    def prob_positive(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """P(positive label) for rows in ``FEATURE_NAMES`` order."""
        inputs = x[:, self.columns].astype(np.float32)
        if self.mean is not None and self.std is not None:
            inputs = (inputs - self.mean) / self.std
        name = self.spec.inputs[0].name
        out = [
            self.session.run([self.spec.probabilities_output], {name: inputs[i : i + _BATCH]})[0]
            for i in range(0, len(inputs), _BATCH)
        ]
        if not out:
            return np.empty(0)
        prob = np.concatenate(out)[:, self.positive_index].astype(np.float64)
        if not np.all(np.isfinite(prob)):
            raise IncompatibleModelError("model produced non-finite probabilities")
        return prob

    def metrics(self, rows: LabelledRows) -> dict[str, Any]:
        prob = self.prob_positive(rows.x)
        return classification_metrics(rows.y, (prob >= self.threshold).astype(np.int64), prob)


def score_history_rows(scorer: WeatherScorer, rows: LabelledRows) -> dict[str, Any]:
    """Model metrics and the persistence baseline on the same rows, flat for JSON."""
    if len(rows) == 0:
        raise WeatherDataError("no rows with complete features and an observed label to score")
    model = scorer.metrics(rows)
    persistence = classification_metrics(rows.y, rows.persistence)
    always_rain = classification_metrics(rows.y, np.ones_like(rows.y))
    result: dict[str, Any] = {
        "n_rows": len(rows),
        "accuracy": model["accuracy"],
        "macro_f1": model["macro_f1"],
        "roc_auc": model["roc_auc"],
        "brier": model["brier"],
        "ece": model["ece"],
        "threshold": scorer.threshold,
        "persistence_accuracy": persistence["accuracy"],
        "persistence_macro_f1": persistence["macro_f1"],
        "always_rain_accuracy": always_rain["accuracy"],
        "always_rain_macro_f1": always_rain["macro_f1"],
        "confusion_matrix": model["confusion_matrix"],
        "labels": list(LABELS),
    }
    for label, figures in model["per_class"].items():
        for key in ("precision", "recall", "f1"):
            result[f"{label}_{key}"] = figures[key]
    return result


def evaluate_csv(csv_path: Path, model_path: Path) -> tuple[dict[str, Any], DataReport]:
    """Clean and label ``csv_path`` as in training, then score the model and persistence."""
    scorer = WeatherScorer.load(model_path)
    history, report = load_station_history(csv_path)
    rows = labelled_rows(history)
    result = score_history_rows(scorer, rows)
    result["first_hour"] = report.first_hour
    result["last_hour"] = report.last_hour
    result["dropped_incomplete_features"] = rows.dropped_incomplete_features
    result["dropped_no_label"] = rows.dropped_no_label
    result["model"] = scorer.spec.name
    result["data_version_trained"] = scorer.spec.data_version
    return result, report
