"""models/weather/spec.yaml says what the code does (names, features, gates, ranges)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloud_trainer.export.keras_onnx import DEFAULT_TOLERANCE
from cloud_trainer.weather.dataset import HORIZON_HOURS, LABELS, POSITIVE_LABEL
from cloud_trainer.weather.model import INPUT_NAME, OUTPUT_NAME
from cloud_trainer.weather.settings import MODEL_NAME
from edge_agent.features.weather import (
    FEATURE_NAMES,
    FEATURE_SET,
    MAX_FILL_HOURS,
    MIN_HISTORY_HOURS,
    VALID_RANGES,
)

SPEC = Path(__file__).resolve().parents[2] / "models" / "weather" / "spec.yaml"


def test_spec_file_matches_the_code() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    assert spec["name"] == MODEL_NAME
    assert spec["horizon_hours"] == HORIZON_HOURS
    assert tuple(spec["labels"]) == LABELS and spec["positive_label"] == POSITIVE_LABEL
    pre = spec["preprocessing"]
    assert pre["feature_set"] == FEATURE_SET
    assert tuple(pre["features"]) == FEATURE_NAMES
    assert pre["max_fill_hours"] == MAX_FILL_HOURS
    assert pre["history_hours"] == MIN_HISTORY_HOURS
    assert spec["inputs"] == [
        {"name": INPUT_NAME, "dtype": "float32", "shape": [None, len(FEATURE_NAMES)]}
    ]
    assert spec["outputs"][0]["name"] == OUTPUT_NAME
    assert spec["quality_gates"]["parity_max_abs_diff"] == DEFAULT_TOLERANCE
    assert spec["quality_gates"]["primary_metric"] == "macro_f1"
    ranges = {k: tuple(float(x) for x in v) for k, v in spec["data"]["valid_ranges"].items()}
    assert ranges == VALID_RANGES
