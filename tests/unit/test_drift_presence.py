"""Drift on a camera model that can answer "no pet": empty scenes feed no detector, the class
ratio is over pets only, and the share of empty scenes is its own windowed figure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_agent.drift.baseline import histogram_baseline
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor, subject_ratio
from edge_agent.protocol import TensorSpec
from edge_agent.protocol.bundle import DriftBaseline, EmbeddingBaseline, ModelSpec, PresenceRule
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction

T0 = datetime(2026, 6, 1, tzinfo=UTC)
RNG = np.random.default_rng(11)
BRIGHTNESS = RNG.normal(0.5, 0.05, 2000)
CONFIDENCE = RNG.uniform(0.8, 1.0, 2000)


def presence_spec(class_ratio: dict[str, float], presence: bool = True) -> ModelSpec:
    labels = ["cat", "dog", "no_pet"] if presence else ["cat", "dog"]
    features = [histogram_baseline(BRIGHTNESS).model_dump() | {"name": "brightness"}]
    return ModelSpec(
        name="catdog",
        task="image_classification",
        labels=labels,
        inputs=[TensorSpec(name="image", dtype="float32", shape=[None, 32, 32, 3])],
        outputs=[
            TensorSpec(name="probs", dtype="float32", shape=[None, len(labels)]),
            TensorSpec(name="embedding", dtype="float32", shape=[None, 4]),
        ],
        probabilities_output="probs",
        embedding_output="embedding",
        preprocessing={"kind": "image", "height": 32, "width": 32},
        drift=DriftBaseline(
            features=features,
            class_ratio=class_ratio,
            confidence=histogram_baseline(CONFIDENCE),
            embedding=EmbeddingBaseline(output="embedding", mean=[0.0] * 4, std=[1.0] * 4, n=500),
        ),
        presence=PresenceRule(absent_label="no_pet", absent_at=0.5) if presence else None,
    )


def pet(k: int) -> Prediction:
    """A frame like the baseline: a cat three times in five, a dog otherwise."""
    return Prediction(
        "cat" if k % 5 < 3 else "dog",
        float(RNG.uniform(0.8, 1.0)),
        embedding=RNG.normal(0, 1, 4).astype(np.float32),
        input_stats={"brightness": float(RNG.normal(0.5, 0.05))},
    )


def empty_scene() -> Prediction:
    """Nothing like any pet: a dark frame, low confidence, an embedding far from validation."""
    return Prediction(
        "no_pet",
        0.55,
        embedding=np.full(4, 6.0, np.float32),
        input_stats={"brightness": 0.05},
    )


def mixed(n: int) -> list[Prediction]:
    """Seven empty scenes in ten; the pets among them keep the baseline's cat/dog ratio."""
    pets = iter(range(n))
    return [pet(next(pets)) if k % 10 >= 7 else empty_scene() for k in range(n)]


def run(monitor: DriftMonitor, predictions: list[Prediction]) -> list[str]:
    raised = []
    for k, prediction in enumerate(predictions):
        sample = Sample(T0 + timedelta(seconds=5 * k), f"f{k}")
        raised += [v.detector for v in monitor.observe(sample, prediction) if v.state == "raised"]
    return raised


@pytest.mark.parametrize(
    "ratio",
    [
        {"cat": 0.6, "dog": 0.4},  # measured on held-out pets only
        {"cat": 0.3, "dog": 0.2, "no_pet": 0.5},  # measured on every held-out frame
    ],
)
def test_empty_scenes_feed_no_detector(ratio: dict[str, float]) -> None:
    monitor = DriftMonitor.from_spec(presence_spec(ratio), DriftConfig(), model_version=2)
    assert [d.name for d in monitor.detectors] == [
        "features",
        "class_ratio",
        "confidence",
        "embedding",
    ]
    ratio_detector = monitor.detectors[1]
    assert ratio_detector.labels == ["cat", "dog"]  # type: ignore[attr-defined]
    assert ratio_detector.ratio == pytest.approx({"cat": 0.6, "dog": 0.4})  # type: ignore[attr-defined]
    # Long empty stretches between pets: were they fed, brightness, confidence, the
    # embedding and the class ratio (no_pet would be 70 % of it) would all raise.
    assert run(monitor, mixed(900)) == []
    snapshot = monitor.snapshot()
    assert snapshot.samples == 900 and snapshot.counters["absent_frames"] == 630
    assert all(d.window is not None for d in snapshot.detectors)  # the pets were tested
    assert snapshot.absent_label == "no_pet"
    assert snapshot.absent_rate == pytest.approx(0.7, abs=0.02)
    assert snapshot.absent_n == DriftConfig().prediction_window.size


def test_the_same_frames_counted_as_pets_do_raise() -> None:
    """The check above means something: without the presence rule, the empty scenes are
    read as pets and the detectors see them."""
    monitor = DriftMonitor.from_spec(
        presence_spec({"cat": 0.6, "dog": 0.4}, presence=False), DriftConfig(), model_version=2
    )
    frames = mixed(900)
    # no_pet is not a label of this model: the class ratio ignores it, the others fire.
    assert {"features", "confidence", "embedding"} <= set(run(monitor, frames))
    assert monitor.absent_rate() is None and monitor.snapshot().absent_rate is None


def test_the_absent_rate_is_a_sliding_window() -> None:
    config = DriftConfig.model_validate({"prediction_window": {"size": 20, "min_samples": 8}})
    monitor = DriftMonitor.from_spec(presence_spec({"cat": 0.6, "dog": 0.4}), config)
    assert monitor.absent_rate() is None
    run(monitor, [empty_scene() for _ in range(30)])
    assert monitor.absent_rate() == 1.0
    run(monitor, [pet(k) for k in range(15)])
    assert monitor.absent_rate() == pytest.approx(5 / 20)
    run(monitor, [pet(k) for k in range(5)])
    assert monitor.absent_rate() == 0.0


def test_subject_ratio_renormalises_only_when_needed() -> None:
    labels = ["cat", "dog"]
    assert subject_ratio({"cat": 0.3, "dog": 0.2, "no_pet": 0.5}, labels) == pytest.approx(
        {"cat": 0.6, "dog": 0.4}
    )
    assert subject_ratio({"cat": 0.6, "dog": 0.4}, labels) == pytest.approx(
        {"cat": 0.6, "dog": 0.4}
    )
    assert subject_ratio({"no_pet": 1.0}, labels) == {"cat": 0.0, "dog": 0.0}
