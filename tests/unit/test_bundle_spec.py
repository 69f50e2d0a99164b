"""The model spec travels inside ONNX metadata and is validated on the way back in."""

import json

import numpy as np
import pytest

from edge_agent.drift.baseline import bin_counts, class_ratio, feature_baselines, histogram_baseline
from edge_agent.features.image import IMAGE_STAT_NAMES, image_statistics, prepare_image
from edge_agent.protocol import ProtocolError, TensorSpec
from edge_agent.protocol.bundle import (
    SPEC_METADATA_KEY,
    DriftBaseline,
    ImagePreprocessing,
    ModelSpec,
    TabularPreprocessing,
)


def _spec(**overrides: object) -> ModelSpec:
    rng = np.random.default_rng(0)
    fields: dict[str, object] = {
        "name": "weather",
        "task": "tabular_classification",
        "labels": ["no_rain", "rain"],
        "inputs": [TensorSpec(name="features", dtype="float32", shape=[None, 3])],
        "outputs": [TensorSpec(name="probs", dtype="float32", shape=[None, 2])],
        "probabilities_output": "probs",
        "positive_label": "rain",
        "decision_threshold": 0.5,
        "preprocessing": TabularPreprocessing(
            feature_set="weather-hourly-v1", features=["t", "h", "p"]
        ),
        "drift": DriftBaseline(
            features=feature_baselines({"t": rng.normal(size=500), "h": rng.uniform(size=500)}),
            class_ratio={"no_rain": 0.2, "rain": 0.8},
            confidence=histogram_baseline(rng.uniform(0.5, 1, size=500)),
        ),
    }
    fields.update(overrides)
    return ModelSpec.model_validate(fields)


def test_spec_round_trips_through_metadata() -> None:
    spec = _spec()
    meta = spec.to_metadata()
    assert list(meta) == [SPEC_METADATA_KEY]
    assert ModelSpec.from_metadata(meta) == spec
    assert spec.drift.feature("t").n == 500


def test_spec_errors_are_named() -> None:
    with pytest.raises(ProtocolError, match=r"has no 'edge_mlops\.spec' metadata"):
        ModelSpec.from_metadata({})
    with pytest.raises(ProtocolError, match="not valid JSON"):
        ModelSpec.from_metadata({SPEC_METADATA_KEY: "{"})
    bad = json.loads(_spec().to_metadata()[SPEC_METADATA_KEY])
    bad["probabilities_output"] = "nope"
    with pytest.raises(ProtocolError, match="probabilities_output 'nope' not in outputs"):
        ModelSpec.from_metadata({SPEC_METADATA_KEY: json.dumps(bad)})
    with pytest.raises(ValueError, match="mean and std"):
        TabularPreprocessing(feature_set="x", features=["a"], normalised_in_graph=False)


def test_histogram_baseline_quantile_bins() -> None:
    x = np.arange(1000, dtype=float)
    h = histogram_baseline(np.append(x, np.nan), bins=4)
    assert h.n == 1000
    assert h.probs == pytest.approx([0.25, 0.25, 0.25, 0.25], abs=0.002)
    const = histogram_baseline(np.ones(10))
    assert const.probs == [1.0]
    counts = bin_counts(np.array([-5.0, 0.0, 999.0, 5000.0]), h.edges)
    assert counts.tolist() == [2.0, 0.0, 0.0, 2.0]
    assert class_ratio(["a", "a", "b"], ["a", "b", "c"]) == pytest.approx(
        {"a": 2 / 3, "b": 1 / 3, "c": 0.0}
    )
    with pytest.raises(ValueError, match="no finite values"):
        histogram_baseline([np.nan])


def test_prepare_image_layouts_and_normalisation() -> None:
    frame = np.zeros((40, 60, 3), dtype=np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    spec = ImagePreprocessing(height=16, width=24, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    x = prepare_image(frame, spec)
    assert x.shape == (1, 16, 24, 3) and x.dtype == np.float32
    assert x[0, 0, 0].tolist() == pytest.approx([1.0, -1.0, -1.0])  # RGB order
    raw = prepare_image(
        frame, spec.model_copy(update={"normalised_in_graph": True, "layout": "NCHW"})
    )
    assert raw.shape == (1, 3, 16, 24)
    assert raw[0, :, 0, 0].tolist() == [255.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        prepare_image(np.zeros((4, 4), dtype=np.uint8), spec)


def test_image_statistics_move_with_the_image() -> None:
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    flat = np.full((240, 320, 3), 128, dtype=np.uint8)
    s_noisy, s_flat = image_statistics(noisy), image_statistics(flat)
    assert set(s_noisy) == set(IMAGE_STAT_NAMES)
    assert s_flat["brightness"] == pytest.approx(128 / 255, abs=0.01)
    assert s_flat["contrast"] == pytest.approx(0.0, abs=1e-6)
    assert s_noisy["sharpness"] > s_flat["sharpness"] + 5
    dark = image_statistics((noisy // 4).astype(np.uint8))
    assert dark["brightness"] < s_noisy["brightness"] / 2
