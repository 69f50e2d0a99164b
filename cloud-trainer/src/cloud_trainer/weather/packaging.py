"""What ships with the forecaster: its spec, drift baseline and the parity-checked ONNX file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cloud_trainer.export import ExportReport, ParityError, export_keras
from cloud_trainer.export.trees_onnx import export_hist_gbt
from cloud_trainer.weather.dataset import (
    HORIZON_HOURS,
    LABELS,
    POSITIVE_LABEL,
    SplitBoundaries,
    SplitRows,
)
from cloud_trainer.weather.gbt import GbtCandidate, predict_rain_gbt
from cloud_trainer.weather.ingest import HourlyHistory
from cloud_trainer.weather.model import (
    INPUT_NAME,
    OUTPUT_NAME,
    Candidate,
    predict_rain,
    without_normalisation,
)
from cloud_trainer.weather.settings import TrainSettings
from edge_agent.drift.baseline import (
    class_ratio,
    feature_baselines,
    histogram_baseline,
    monthly_rate,
    seasonal_class_ratio,
    seasonal_features,
    seasonal_histogram,
)
from edge_agent.features.weather import FEATURE_NAMES, FEATURE_SET
from edge_agent.health.baseline import sensor_health_baseline
from edge_agent.protocol.bundle import (
    DriftBaseline,
    ModelSpec,
    SeasonalBaseline,
    TabularPreprocessing,
)
from edge_agent.protocol.manifest import TensorSpec
from edge_agent.protocol.messages import utc_now
from edge_agent.protocol.sensors import SensorHealthBaseline

log = logging.getLogger(__name__)


# Features the drift monitor watches per month (figures in docs/drift.md): the key readings
# and their 3-hour changes. Left out: hour/day-of-year sin/cos (set by the clock, not the
# weather), condition one-hots and lags (the class-ratio detector's business), apparent
# temperature (repeats temperature), and wind and visibility, whose day-to-day swings alone
# would raise more than one alert a week in time order.
DRIFT_FEATURES: tuple[str, ...] = (
    "temperature_c",
    "humidity",
    "pressure_mb",
    "temperature_delta_3h",
    "humidity_delta_3h",
    "pressure_delta_3h",
)


def drift_baseline(split: SplitRows, best: Candidate) -> DriftBaseline:
    """The drift baseline of ``best`` (see ``drift_baseline_from``)."""
    return drift_baseline_from(
        split,
        predict_rain(best.model, split.train.x),
        predict_rain(best.model, split.validation.x),
        best.threshold,
    )


def drift_baseline_from(
    split: SplitRows,
    prob_train: npt.NDArray[np.float64],
    prob_validation: npt.NDArray[np.float64],
    threshold: float,
) -> DriftBaseline:
    """Whole-period bins of every feature from training rows, class ratio and confidence on
    validation (what older agents read); and per-month baselines: watched features from
    training rows, class ratio and confidence from
    training and validation predictions (a month of one year is one year's weather), the
    forecast error rate per month on validation (errors on training rows flatter)."""
    columns = {name: split.train.x[:, i] for i, name in enumerate(FEATURE_NAMES)}
    watched = {name: columns[name] for name in DRIFT_FEATURES}
    predicted = [LABELS[int(p >= threshold)] for p in prob_validation]
    hours = np.concatenate([split.train.hours, split.validation.hours])
    prob = np.concatenate([prob_train, prob_validation])
    ratios, inflation = seasonal_class_ratio(
        hours, [LABELS[int(p >= threshold)] for p in prob], LABELS
    )
    wrong = (prob_validation >= threshold).astype(np.int64) != split.validation.y
    return DriftBaseline(
        features=feature_baselines(columns),
        class_ratio=class_ratio(predicted, LABELS),
        confidence=histogram_baseline(np.maximum(prob_validation, 1.0 - prob_validation)),
        seasonal=SeasonalBaseline(
            features=seasonal_features(split.train.hours, watched),
            class_ratio=ratios,
            class_ratio_inflation=inflation,
            confidence=seasonal_histogram(hours, np.maximum(prob, 1.0 - prob)),
            error_rate=monthly_rate(split.validation.hours, wrong),
        ),
    )


def model_spec(
    settings: TrainSettings,
    best: Candidate | GbtCandidate,
    drift: DriftBaseline,
    version: str,
    commit: str | None,
    normalisation: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None,
    *,
    sensor_health: SensorHealthBaseline | None = None,
) -> ModelSpec:
    """The spec shipped in the ONNX file; ``normalisation`` (mean, std) when outside the graph."""
    return ModelSpec(
        name=settings.model_name,
        task="tabular_classification",
        labels=list(LABELS),
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=[None, len(FEATURE_NAMES)])],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=[None, len(LABELS)])],
        probabilities_output=OUTPUT_NAME,
        positive_label=POSITIVE_LABEL,
        decision_threshold=best.threshold,
        preprocessing=TabularPreprocessing(
            feature_set=FEATURE_SET,
            features=list(FEATURE_NAMES),
            normalised_in_graph=normalisation is None,
            mean=None if normalisation is None else [float(v) for v in normalisation[0]],
            std=None if normalisation is None else [float(v) for v in normalisation[1]],
        ),
        drift=drift,
        sensor_health=sensor_health,
        data_version=version,
        horizon_s=HORIZON_HOURS * 3600,
        latency_budget_ms=50.0,
        created=utc_now(),
        git_commit=commit,
    )


def export_model(
    settings: TrainSettings,
    best: Candidate,
    split: SplitRows,
    path: Path,
    make_spec: Callable[
        [tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None], ModelSpec
    ],
    extra: dict[str, str],
) -> ExportReport:
    """Export with normalisation in the graph; if parity fails there, move it to the spec."""
    test_x = split.test.x
    if settings.normalisation in ("auto", "graph"):
        try:
            return export_keras(
                best.model,
                make_spec(None),
                path,
                {INPUT_NAME: test_x},
                tolerance=settings.parity_tolerance,
                extra_metadata=extra,
            )
        except ParityError as e:
            if settings.normalisation == "graph":
                raise
            log.warning("%s with normalisation in the graph; moving it to the spec", e)
    inner, mean, std = without_normalisation(best.model)
    return export_keras(
        inner,
        make_spec((mean, std)),
        path,
        {INPUT_NAME: ((test_x - mean) / std).astype(np.float32)},
        tolerance=settings.parity_tolerance,
        extra_metadata=extra,
    )


def export_gbt_model(
    settings: TrainSettings,
    best: GbtCandidate,
    split: SplitRows,
    path: Path,
    spec: ModelSpec,
    extra: dict[str, str],
) -> ExportReport:
    """Export the trees; they split raw feature values, so the graph takes raw rows as is."""
    if not (spec.preprocessing.kind == "tabular" and spec.preprocessing.normalised_in_graph):
        raise ValueError("a tree model's spec must say the graph takes raw feature rows")
    return export_hist_gbt(
        best.model,
        spec,
        path,
        {INPUT_NAME: split.test.x},
        tolerance=settings.parity_tolerance,
        extra_metadata=extra,
    )


def gbt_drift_baseline(split: SplitRows, best: GbtCandidate) -> DriftBaseline:
    """The drift baseline of a tree model (see ``drift_baseline_from``)."""
    return drift_baseline_from(
        split,
        predict_rain_gbt(best.model, split.train.x),
        predict_rain_gbt(best.model, split.validation.x),
        best.threshold,
    )


def station_sensor_health(
    history: HourlyHistory, split: SplitBoundaries
) -> SensorHealthBaseline | None:
    """The sensor-health baseline from the training hours (before the validation year):
    per-sensor limits and change models the device tests its readings with."""
    train = history.hours < np.datetime64(split.validation_start, "h")
    try:
        return sensor_health_baseline(
            history.hours[train], {k: v[train] for k, v in history.readings.items()}
        )
    except ValueError as e:  # too short a history: the model ships without sensor tests
        log.warning("no sensor-health baseline: %s", e)
        return None
