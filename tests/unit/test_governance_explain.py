"""Explanations on real onnxruntime sessions: permutation importance, its change, occlusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.catdog.evaluate import OnnxClassifier
from cloud_trainer.governance.errors import GovernanceError
from cloud_trainer.governance.explain.importance import (
    importance_change,
    permutation_importance,
    roc_auc,
)
from cloud_trainer.governance.explain.local import ExplainInputError, explain_file
from cloud_trainer.governance.explain.saliency import occlusion_map, overlay_png
from cloud_trainer.weather.scoring import WeatherScorer
from edge_agent.features.weather import FEATURE_NAMES
from tests.support.onnx_models import image_classifier, weather_classifier


def _rows(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rows where rain follows humidity (the tiny model's own rule), with label noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, len(FEATURE_NAMES))).astype(np.float32)
    h = FEATURE_NAMES.index("humidity")
    x[:, h] = rng.uniform(0.3, 1.0, n)
    y = (x[:, h] > 0.75).astype(np.int64)
    flip = rng.random(n) < 0.05
    y[flip] = 1 - y[flip]
    return x, y


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> WeatherScorer:
    path = tmp_path_factory.mktemp("wx") / "rain4h.onnx"
    weather_classifier(path)
    return WeatherScorer.load(path)


def test_importance_is_deterministic_and_finds_the_rule(scorer: WeatherScorer) -> None:
    x, y = _rows()
    first = permutation_importance(scorer.prob_positive, x, y, FEATURE_NAMES, seed=7)
    second = permutation_importance(scorer.prob_positive, x, y, FEATURE_NAMES, seed=7)
    assert first.ranking() == second.ranking()
    assert [f.mean_drop for f in first.features] == [f.mean_drop for f in second.features]
    assert first.ranking()[0] == "humidity"
    assert first.features[0].mean_drop > 0.2
    # Features the model gives no weight cannot matter, whatever the shuffle.
    unused = first.by_feature()["wind_speed_kmph"]
    assert unused.mean_drop == 0.0
    other_seed = permutation_importance(scorer.prob_positive, x, y, FEATURE_NAMES, seed=8)
    assert other_seed.ranking()[0] == "humidity"
    assert x[0, 0] == _rows()[0][0, 0]  # the caller's rows are left as they were


def test_importance_change_is_largest_first(scorer: WeatherScorer) -> None:
    x, y = _rows()
    before = permutation_importance(scorer.prob_positive, x, y, FEATURE_NAMES, seed=0)
    h = FEATURE_NAMES.index("humidity")
    dulled = x.copy()
    dulled[:, h] = 0.5 + (x[:, h] - 0.5) * 0.1  # the same model sees less of humidity
    after = permutation_importance(scorer.prob_positive, dulled, y, FEATURE_NAMES, seed=0)
    changes = importance_change(before, after)
    assert changes[0].feature == "humidity"
    assert changes[0].change < 0 and changes[0].rank_before == 1


def test_importance_refuses_bad_shapes(scorer: WeatherScorer) -> None:
    x, y = _rows(50)
    with pytest.raises(ValueError, match="columns"):
        permutation_importance(scorer.prob_positive, x[:, :5], y, FEATURE_NAMES)
    with pytest.raises(ValueError, match="one class"):
        permutation_importance(scorer.prob_positive, x, np.zeros_like(y), FEATURE_NAMES)
    assert np.isnan(roc_auc(np.ones(4, dtype=np.int64), np.linspace(0, 1, 4)))


def test_local_explanation_needs_a_training_baseline(tmp_path: Path) -> None:
    path = tmp_path / "rain4h.onnx"
    weather_classifier(path)  # carries no drift baseline: there is no mean to compare with
    row = dict.fromkeys(FEATURE_NAMES, 0.0)
    with pytest.raises(GovernanceError, match="no training baseline"):
        explain_file(path, row)
    with pytest.raises(ExplainInputError, match="missing feature"):
        explain_file(path, {"humidity": 0.9})
    with pytest.raises(ExplainInputError, match="unknown feature"):
        explain_file(path, {**row, "colour": 1.0})
    with pytest.raises(ExplainInputError, match="non-finite value for humidity"):
        explain_file(path, {**row, "humidity": float("nan")})
    with pytest.raises(GovernanceError, match="not a loadable"):
        explain_file(tmp_path / "missing.onnx", row)


def test_occlusion_finds_the_patch_the_decision_rests_on(tmp_path: Path) -> None:
    path = tmp_path / "catdog.onnx"
    image_classifier(path, size=32)
    model = OnnxClassifier.load(path)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:16, :16, 2] = 255  # a red patch, top left: the only thing saying "cat"
    saliency = occlusion_map(model, frame, grid=4)
    assert saliency.label == "cat"
    assert saliency.peak_cell == (0, 0)
    assert saliency.drops[0, 0] > 0 > saliency.drops[3, 3]
    png = overlay_png(frame, saliency)
    assert png.startswith(b"\x89PNG")
