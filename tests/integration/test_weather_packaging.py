"""Normalisation in the graph or in the spec: both exports score identically through the scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.export import read_spec
from cloud_trainer.weather.dataset import apply_split, labelled_rows, time_split
from cloud_trainer.weather.ingest import load_station_history
from cloud_trainer.weather.model import Hyperparameters, train_candidate
from cloud_trainer.weather.packaging import drift_baseline, export_model, model_spec
from cloud_trainer.weather.scoring import WeatherScorer
from cloud_trainer.weather.settings import TrainSettings, sample_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_spec_side_normalisation_matches_in_graph(tmp_path: Path) -> None:
    history, _ = load_station_history(sample_path())
    rows = labelled_rows(history)
    split = apply_split(rows, time_split(rows.hours))
    params = Hyperparameters(units=16, layers=1, max_epochs=2, patience=1)
    best = train_candidate(params, split.train, split.validation, seed=0)
    drift = drift_baseline(split, best)
    paths = {}
    for mode in ("graph", "spec"):
        settings = TrainSettings(data=sample_path(), normalisation=mode)

        def make_spec(norm, settings=settings):
            return model_spec(settings, best, drift, "v", None, norm)

        paths[mode] = export_model(
            settings, best, split, tmp_path / f"{mode}.onnx", make_spec, {}
        ).path
    graph_spec, spec_spec = read_spec(paths["graph"]), read_spec(paths["spec"])
    assert graph_spec.preprocessing.kind == spec_spec.preprocessing.kind == "tabular"
    assert graph_spec.preprocessing.normalised_in_graph
    assert not spec_spec.preprocessing.normalised_in_graph
    assert spec_spec.preprocessing.std is not None and min(spec_spec.preprocessing.std) > 0
    in_graph = WeatherScorer.load(paths["graph"]).prob_positive(split.test.x)
    outside = WeatherScorer.load(paths["spec"]).prob_positive(split.test.x)
    np.testing.assert_allclose(outside, in_graph, atol=1e-5)
    assert 0.0 < float(in_graph.mean()) < 1.0
