"""The model spec's optional capture level: validated, optional for older specs, and measured
as a quantile of held-out top-class probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from cloud_trainer.catdog.model_spec import CAPTURE_QUANTILE, capture_fields
from edge_agent.drift.baseline import capture_threshold
from edge_agent.drift.config import FALLBACK_LOW_CONFIDENCE, CaptureConfig
from edge_agent.protocol import ProtocolError
from edge_agent.protocol.bundle import SPEC_METADATA_KEY, ModelSpec
from tests.support.drift import camera_spec


def _metadata(**fields: object) -> dict[str, str]:
    raw = json.loads(camera_spec({"brightness": [0.1, 0.5, 0.9]}).to_metadata()[SPEC_METADATA_KEY])
    raw.update(fields)
    return {SPEC_METADATA_KEY: json.dumps(raw)}


def test_older_specs_without_the_field_still_load() -> None:
    meta = _metadata()
    assert "capture_below" not in meta[SPEC_METADATA_KEY]
    spec = ModelSpec.from_metadata(meta)
    assert spec.capture_below is None and spec.capture_quantile is None
    # An unset level is left out of the metadata, so the file reads as before.
    assert "capture_below" not in spec.to_metadata()[SPEC_METADATA_KEY]


@pytest.mark.parametrize("below", [0.97, 1.0, 1e-6])
def test_capture_level_round_trips_through_metadata(below: float) -> None:
    spec = ModelSpec.from_metadata(_metadata(capture_below=below, capture_quantile=0.1))
    assert spec.capture_below == below and spec.capture_quantile == 0.1
    assert ModelSpec.from_metadata(spec.to_metadata()) == spec
    # The quantile is provenance: a level alone is valid too.
    assert ModelSpec.from_metadata(_metadata(capture_below=below)).capture_quantile is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"capture_below": 0.0}, "capture_below"),
        ({"capture_below": -0.2}, "capture_below"),
        ({"capture_below": 1.01}, "capture_below"),
        ({"capture_below": "high"}, "capture_below"),
        ({"capture_below": 0.9, "capture_quantile": 0.0}, "capture_quantile"),
        ({"capture_below": 0.9, "capture_quantile": 1.0}, "capture_quantile"),
        ({"capture_quantile": 0.1}, "capture_quantile needs capture_below"),
    ],
)
def test_invalid_capture_levels_are_refused_by_name(fields: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        ModelSpec.from_metadata(_metadata(**fields))


def test_non_finite_capture_level_is_refused() -> None:
    raw = _metadata()[SPEC_METADATA_KEY].replace('"name"', '"capture_below": NaN, "name"', 1)
    with pytest.raises(ProtocolError, match="capture_below"):
        ModelSpec.from_metadata({SPEC_METADATA_KEY: raw})


def test_threshold_is_the_quantile_of_the_top_probability() -> None:
    rng = np.random.default_rng(0)
    p_dog = rng.beta(0.3, 0.3, size=2000)  # mostly confident, a few unsure
    probs = np.stack([1 - p_dog, p_dog], axis=1).astype(np.float32)
    top = probs.max(axis=1)
    level = capture_threshold(probs, 0.1)
    assert np.mean(top < level) == pytest.approx(0.1, abs=0.005)
    assert capture_threshold(top, 0.1) == pytest.approx(level)
    assert 0.5 <= level <= 1
    assert capture_fields(probs) == {"capture_below": level, "capture_quantile": CAPTURE_QUANTILE}
    # A saturated model (every answer 1.0 in float32) still yields a valid spec level.
    assert capture_threshold(np.ones(10, np.float32) + np.float32(1e-7), 0.1) == 1.0


@pytest.mark.parametrize(
    ("values", "quantile", "message"),
    [
        ([0.9, 0.8], 0.0, "quantile"),
        ([0.9, 0.8], 1.0, "quantile"),
        ([], 0.1, "no finite"),
        ([np.nan], 0.1, "no finite"),
        ([0.9, 1.5], 0.1, r"\(0, 1\]"),
        ([0.0, 0.9], 0.1, r"\(0, 1\]"),
    ],
)
def test_threshold_refuses_what_is_not_probabilities(
    values: list[float], quantile: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        capture_threshold(np.array(values), quantile)


def test_config_value_wins_then_the_model_then_the_fallback() -> None:
    default = CaptureConfig()
    assert default.low_confidence_below is None and default.random_sample_rate == 0.01
    assert default.low_confidence_level(0.97) == 0.97
    assert default.low_confidence_level(None) == FALLBACK_LOW_CONFIDENCE == 0.6
    explicit = CaptureConfig(low_confidence_below=0.5)
    assert explicit.low_confidence_level(0.97) == 0.5
    assert explicit.low_confidence_level(None) == 0.5
    for bad in (
        {"low_confidence_below": 0},
        {"random_sample_rate": -0.1},
        {"random_sample_rate": 2},
    ):
        with pytest.raises(ValidationError):
            CaptureConfig.model_validate(bad)
