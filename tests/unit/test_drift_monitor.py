"""Drift monitor: hysteresis and cooldown, class-ratio shift, embeddings, windows, payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_agent.drift.baseline import bin_counts, class_ratio, feature_baselines, histogram_baseline
from edge_agent.drift.config import DriftConfig, WindowConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.drift.windows import HistogramWindow, MeanWindow
from edge_agent.protocol import TensorSpec
from edge_agent.protocol.bundle import DriftBaseline, EmbeddingBaseline, ModelSpec
from edge_agent.protocol.codec import decode_message, encode
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NAMES = ["temperature_c", "pressure_mb", "humidity"]


def _spec(rng: np.random.Generator, **drift: object) -> ModelSpec:
    base = rng.normal(size=(5000, 3)) * [8.0, 7.0, 0.2] + [10.0, 1013.0, 0.7]
    fields: dict[str, object] = {
        "features": feature_baselines({n: base[:, i] for i, n in enumerate(NAMES)}),
        "class_ratio": {"cat": 0.6, "dog": 0.4},
    }
    fields.update(drift)
    return ModelSpec(
        name="m",
        task="tabular_classification",
        labels=["cat", "dog"],
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 3])],
        outputs=[
            TensorSpec(name="p", dtype="float32", shape=[None, 2]),
            TensorSpec(name="e", dtype="float32", shape=[None, 4]),
        ],
        probabilities_output="p",
        embedding_output="e",
        preprocessing={"kind": "tabular", "feature_set": "t", "features": NAMES},
        drift=DriftBaseline.model_validate(fields),
    )


def _feed(monitor, rows, labels=None, start=0, embeddings=None):
    out = []
    for k, row in enumerate(rows):
        feats = dict(zip(NAMES, (float(v) for v in row), strict=True))
        label = labels[k] if labels is not None else "cat"
        emb = embeddings[k] if embeddings is not None else None
        sample = Sample(T0 + timedelta(hours=start + k), f"s{start + k}", features=feats)
        for v in monitor.observe(sample, Prediction(label, 0.9, embedding=emb)):
            out.append((start + k, v))
    return out


def _rows(rng, n, shift=0.0):
    return rng.normal(size=(n, 3)) * [8.0, 7.0, 0.2] + [10.0, 1013.0 + shift, 0.7]


def test_long_drifted_stream_raises_once_and_clears_once() -> None:
    rng = np.random.default_rng(1)
    config = DriftConfig(detectors=["features"])
    monitor = DriftMonitor.from_spec(_spec(rng), config, model_version=4)
    calm = _feed(monitor, _rows(rng, 500))
    # Pressure sensor offset by 2σ for three weeks, then fixed.
    drifted = _feed(monitor, _rows(rng, 504, shift=14.0), start=500)
    healed = _feed(monitor, _rows(rng, 500), start=1004)
    assert calm == []
    assert [v.state for _, v in drifted] == ["raised"]
    assert [v.state for _, v in healed] == ["cleared"]
    k, alert = drifted[0]
    assert k - 500 <= 24
    assert alert.features[0].name == "pressure_mb"
    assert alert.features[0].score >= alert.features[0].threshold
    # Raised while the window still mixes old and new readings: its mean has moved up.
    assert alert.features[0].current > alert.features[0].baseline + 3
    message = alert.to_message("cam-1", seq=17, ts=T0)
    assert message.model_version == 4 and message.detector == "features"
    assert message.window.n == config.feature_window.size
    assert decode_message(encode(message)) == message
    snap = monitor.snapshot()
    assert snap.raised == [] and snap.detectors[0].scores


def test_cooldown_holds_back_a_second_raise() -> None:
    rng = np.random.default_rng(2)
    config = DriftConfig(detectors=["features"], cooldown_s=48 * 3600)
    monitor = DriftMonitor.from_spec(_spec(rng), config, model_version=1)
    alerts = _feed(monitor, _rows(rng, 100))
    alerts += _feed(monitor, _rows(rng, 30, shift=20.0), start=100)
    alerts += _feed(monitor, _rows(rng, 30), start=130)
    alerts += _feed(monitor, _rows(rng, 30, shift=20.0), start=160)
    states = [(k, v.state) for k, v in alerts]
    assert states[0][1] == "raised"
    # Everything within the 48 h cooldown of the raise is held: at most the clear after it.
    assert all(k - states[0][0] >= 48 for k, _ in states[1:])
    assert sum(1 for _, s in states if s == "raised") == 1


def test_dogs_predicted_more_often_than_in_validation() -> None:
    rng = np.random.default_rng(3)
    config = DriftConfig(detectors=["class_ratio"])
    monitor = DriftMonitor.from_spec(_spec(rng), config, model_version=2)
    calm_labels = list(rng.choice(["cat", "dog"], p=[0.6, 0.4], size=600))
    assert _feed(monitor, _rows(rng, 600), calm_labels) == []
    dog_heavy = list(rng.choice(["cat", "dog"], p=[0.4, 0.6], size=400))
    alerts = _feed(monitor, _rows(rng, 400), dog_heavy, start=600)
    assert [v.state for _, v in alerts] == ["raised"]
    dog = alerts[0][1].features[0]
    assert dog.name == "dog" and dog.metric == "ratio"
    assert dog.baseline == 0.4 and dog.current == pytest.approx(0.6, abs=0.08)
    assert "dog" in alerts[0][1].summary


def test_embedding_shift_is_found_and_bad_vectors_are_counted() -> None:
    rng = np.random.default_rng(4)
    emb = EmbeddingBaseline(output="e", mean=[0.0] * 4, std=[1.0] * 4, n=1000)
    config = DriftConfig(detectors=["embedding"])
    monitor = DriftMonitor.from_spec(_spec(rng, embedding=emb), config, model_version=1)
    calm = rng.normal(size=(400, 4))
    assert _feed(monitor, _rows(rng, 400), embeddings=calm) == []
    moved = rng.normal(0.8, 1, size=(200, 4))
    alerts = _feed(monitor, _rows(rng, 200), embeddings=moved, start=400)
    assert [v.state for _, v in alerts] == ["raised"]
    assert alerts[0][1].features[0].name == "embedding_mean"
    _feed(monitor, _rows(rng, 2), embeddings=[np.full(4, np.nan), np.ones(3)], start=600)
    assert monitor.snapshot().detectors[0].detail["rejected"] == 2


def test_histogram_window_counts_match_a_recount_and_skip_nan() -> None:
    rng = np.random.default_rng(5)
    base = histogram_baseline(rng.normal(size=1000))
    window = HistogramWindow(WindowConfig(size=50, min_samples=10), [base.edges, base.edges])
    values = rng.normal(size=(237, 2))
    values[::7, 1] = np.nan
    for k, row in enumerate(values):
        window.add(T0 + timedelta(minutes=k), row)
    held = values[-50:]
    assert window.n == 50
    np.testing.assert_array_equal(window.counts(0), bin_counts(held[:, 0], base.edges))
    finite = held[:, 1][np.isfinite(held[:, 1])]
    np.testing.assert_array_equal(window.counts(1), bin_counts(finite, base.edges))
    assert window.means()[1] == pytest.approx(finite.mean())
    span = window.describe()
    assert span.n == 50 and span.end - span.start == timedelta(minutes=49)


def test_tumbling_and_mean_windows_are_bounded() -> None:
    tumbling = HistogramWindow(WindowConfig(size=10, mode="tumbling", min_samples=10), [[0, 1, 2]])
    due = []
    for k in range(35):
        tumbling.add_scalar(T0 + timedelta(seconds=k), 0.5)
        if tumbling.due():
            due.append(k)
            tumbling.tested()
    assert due == [9, 19, 29] and tumbling.n == 5
    means = MeanWindow(WindowConfig(size=8), dim=3)
    for k in range(100):
        means.add(T0 + timedelta(seconds=k), np.full(3, float(k)))
    np.testing.assert_allclose(means.mean(), np.full(3, np.mean(range(92, 100))))
    with pytest.raises(ValueError, match="NaN"):
        means.add(T0, [np.nan, 0, 0])


def test_naive_timestamps_are_refused_without_stopping_the_monitor() -> None:
    rng = np.random.default_rng(6)
    monitor = DriftMonitor.from_spec(_spec(rng), DriftConfig(detectors=["features"]))
    naive = Sample(datetime(2024, 1, 1), "bad", features={"pressure_mb": 1013.0})
    assert monitor.observe(naive, Prediction("cat", 0.9)) == []
    assert monitor.snapshot().counters["features_rejected"] == 1


def test_config_refuses_inverted_hysteresis() -> None:
    with pytest.raises(ValueError, match="clear_at"):
        DriftConfig.model_validate({"thresholds": {"psi": {"raise_at": 0.2, "clear_at": 0.3}}})
    with pytest.raises(ValueError, match="extra"):
        DriftConfig.model_validate({"windw": {}})
    assert class_ratio(["a", "a", "b"], ["a", "b", "c"]) == {"a": 2 / 3, "b": 1 / 3, "c": 0.0}
