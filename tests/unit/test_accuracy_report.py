"""Accuracy on labelled predictions as telemetry reports it: macro-F1 on a hand-computed
example, the monitor's window of joined forecasts, and the wire field (absent, never NaN)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.drift.accuracy import Outcome, labelled_accuracy, macro_f1
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.protocol import LabelledAccuracy, TelemetryMessage, decode_message, encode
from edge_agent.protocol.bundle import ModelSpec
from edge_agent.protocol.manifest import TensorSpec
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction
from tests.support.samples import sample_messages

NO_RAIN, RAIN = 0, 1
T0 = datetime(2015, 3, 1, tzinfo=UTC)


def test_macro_f1_on_a_hand_computed_example() -> None:
    predicted = np.array([RAIN, RAIN, NO_RAIN, NO_RAIN, RAIN, NO_RAIN, NO_RAIN, NO_RAIN])
    observed = np.array([RAIN, NO_RAIN, NO_RAIN, RAIN, RAIN, NO_RAIN, NO_RAIN, NO_RAIN])
    # rain:    tp 2 (0, 4), fp 1 (1), fn 1 (3) -> F1 = 2*2 / (2*2 + 1 + 1) = 4/6
    # no_rain: tp 4 (2, 5, 6, 7), fp 1 (3), fn 1 (1) -> F1 = 2*4 / (2*4 + 1 + 1) = 8/10
    assert macro_f1(predicted, observed, 2) == pytest.approx((4 / 6 + 8 / 10) / 2)
    # A third label neither predicted nor observed in the window does not count.
    assert macro_f1(predicted, observed, 3) == pytest.approx((4 / 6 + 8 / 10) / 2)
    # A label only ever predicted counts, with F1 0.
    assert macro_f1(np.array([2, 0]), np.array([0, 0]), 3) == pytest.approx((2 / 3 + 0) / 2)


def test_report_of_outcomes() -> None:
    assert labelled_accuracy([], 2) is None
    pairs = [(1, 1), (1, 0), (0, 0), (0, 1), (1, 1), (0, 0), (0, 0), (0, 0)]
    outcomes = [Outcome(p, o, float(k)) for k, (p, o) in enumerate(pairs)]
    report = labelled_accuracy(outcomes, 2)
    assert report is not None
    assert report.n == 8
    assert report.accuracy == pytest.approx(6 / 8)
    assert report.macro_f1 == pytest.approx((4 / 6 + 8 / 10) / 2)


def _forecaster() -> ModelSpec:
    return ModelSpec(
        name="rain4h",
        task="tabular_classification",
        labels=["no_rain", "rain"],
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 2])],
        outputs=[TensorSpec(name="p", dtype="float32", shape=[None, 2])],
        probabilities_output="p",
        positive_label="rain",
        preprocessing={"kind": "tabular", "feature_set": "t", "features": ["a", "b"]},
        horizon_s=4 * 3600,
    )


def test_monitor_reports_the_last_window_of_joined_forecasts() -> None:
    config = DriftConfig(detectors=["errors"], accuracy_window=8)  # no accuracy detector
    monitor = DriftMonitor.from_spec(_forecaster(), config)
    observed = ["rain", "snow", "clear", "rain", "rain", "snow"] * 4  # 24 hours
    forecasts = ["rain" if k % 3 else "no_rain" for k in range(len(observed))]
    reports = []
    for k, (seen, said) in enumerate(zip(observed, forecasts, strict=True)):
        sample = Sample(T0 + timedelta(hours=k), f"h{k}", observed_label=seen)
        monitor.observe(sample, Prediction(said, 0.8))
        reports.append(monitor.labelled())
    # Nothing is labelled until the forecast of hour 0 meets the observation of hour 4.
    assert reports[:4] == [None] * 4
    # By hand: forecast k scored with what was observed at k + 4 (snow, clear are no_rain).
    truth = ["rain" if seen == "rain" else "no_rain" for seen in observed]
    pairs = [(forecasts[k], truth[k + 4]) for k in range(len(observed) - 4)]
    for k in range(4, len(observed)):
        joined = pairs[: k - 3][-8:]
        expected_acc = sum(p == o for p, o in joined) / len(joined)
        f1s = []
        for label in ("no_rain", "rain"):
            tp = sum(p == o == label for p, o in joined)
            fp = sum(p == label != o for p, o in joined)
            fn = sum(o == label != p for p, o in joined)
            if tp + fp + fn:
                f1s.append(2 * tp / (2 * tp + fp + fn))
        report = reports[k]
        assert report is not None
        assert report.n == len(joined) == min(k - 3, 8)
        assert report.accuracy == pytest.approx(expected_acc)
        assert report.macro_f1 == pytest.approx(sum(f1s) / len(f1s))


def test_monitor_without_a_forecast_join_reports_nothing() -> None:
    spec = _forecaster().model_copy(update={"horizon_s": None})
    monitor = DriftMonitor.from_spec(spec, DriftConfig())
    monitor.observe(Sample(T0, "h0", observed_label="rain"), Prediction("rain", 0.9))
    assert monitor.labelled() is None


def test_wire_field_is_absent_without_labels_and_refuses_nan() -> None:
    telemetry = sample_messages()[1]
    assert isinstance(telemetry, TelemetryMessage) and telemetry.labelled is None
    assert "labelled" not in json.loads(encode(telemetry))
    labelled = telemetry.model_copy(
        update={"labelled": LabelledAccuracy(accuracy=0.9375, macro_f1=0.8, n=48)}
    )
    wire = json.loads(encode(labelled))
    assert wire["labelled"] == {"accuracy": 0.9375, "macro_f1": 0.8, "n": 48}
    decoded = decode_message(encode(labelled))
    assert isinstance(decoded, TelemetryMessage) and decoded.labelled == labelled.labelled
    for bad in (
        {"accuracy": math.nan, "macro_f1": 0.5, "n": 3},
        {"accuracy": 0.5, "macro_f1": math.inf, "n": 3},
        {"accuracy": 1.5, "macro_f1": 0.5, "n": 3},
        {"accuracy": 0.5, "macro_f1": 0.5, "n": 0},
        {"accuracy": 0.5, "n": 3},
    ):
        with pytest.raises(ValidationError):
            LabelledAccuracy.model_validate(bad)
