"""Gradient-boosted trees on real hours → ONNX → the agent's own engine, fed by its own builder."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_weather_models import main as bench_main
from cloud_trainer.export import read_spec
from cloud_trainer.weather.dataset import labelled_rows
from cloud_trainer.weather.gbt import GBT_QUICK_SPACE, predict_rain_gbt, train_gbt_candidate
from cloud_trainer.weather.ingest import load_station_history
from cloud_trainer.weather.model import INPUT_NAME, OUTPUT_NAME
from cloud_trainer.weather.packaging import export_gbt_model, gbt_drift_baseline, model_spec
from cloud_trainer.weather.pipeline import train_weather
from cloud_trainer.weather.rolling import fold_rows, rolling_origin_folds
from cloud_trainer.weather.scoring import WeatherScorer
from cloud_trainer.weather.settings import TrainSettings, sample_path
from edge_agent.features.weather import (
    CONDITIONS,
    FEATURE_NAMES,
    FEATURE_SET,
    READING_FIELDS,
    HourlyReading,
    WeatherFeatureBuilder,
    feature_vector,
)
from edge_agent.inference.engine import InferenceEngine
from edge_agent.sources.sample import Sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARITY = 1e-5


@pytest.fixture(scope="module")
def real_csv(shared_data: Path) -> Path:
    return shared_data / "weather" / "weather_dataset_raw.csv.gz"


@pytest.fixture(scope="module")
def exported(real_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """Trained on 2013, calibrated on 2014, exported with 2015 as the parity rows."""
    history, _ = load_station_history(real_csv)
    rows = labelled_rows(history)
    (fold,) = rolling_origin_folds(rows.hours, test_years=[2015], train_years=1)
    split = fold_rows(rows, fold)
    best = train_gbt_candidate(GBT_QUICK_SPACE[0], split.train, split.validation, seed=0)
    settings = TrainSettings(data=real_csv)
    spec = model_spec(settings, best, gbt_drift_baseline(split, best), "test", None)
    path = tmp_path_factory.mktemp("gbt") / "weather-gbt.onnx"
    export = export_gbt_model(settings, best, split, path, spec, {})
    return history, split, best, export


def test_export_has_parity_and_the_agent_contract(exported) -> None:
    _, split, best, export = exported
    assert export.max_abs_diff <= PARITY and export.n_parity_rows == len(split.test)
    spec = read_spec(export.path)
    assert spec.task == "tabular_classification" and spec.labels == ["no_rain", "rain"]
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [
        (INPUT_NAME, "float32", [None, len(FEATURE_NAMES)])
    ]
    assert spec.probabilities_output == OUTPUT_NAME
    assert spec.preprocessing.kind == "tabular"
    assert spec.preprocessing.feature_set == FEATURE_SET
    assert spec.preprocessing.features == list(FEATURE_NAMES)
    assert spec.preprocessing.normalised_in_graph and spec.preprocessing.mean is None
    assert spec.decision_threshold == best.threshold
    assert {f.name for f in spec.drift.features} == set(FEATURE_NAMES)
    # The scorer (cloud side) over the whole test year agrees with scikit-learn.
    onnx_prob = WeatherScorer.load(export.path).prob_positive(split.test.x)
    np.testing.assert_allclose(onnx_prob, predict_rain_gbt(best.model, split.test.x), atol=PARITY)


def test_agent_engine_serves_it_from_its_own_feature_builder(exported) -> None:
    history, _, best, export = exported
    engine = InferenceEngine.load(export.path)  # checks the graph against the spec
    assert engine.warm_up() >= 0.0
    start = int(np.flatnonzero(history.hours == np.datetime64("2015-03-01T00", "h"))[0])
    builder = WeatherFeatureBuilder()
    agent_prob, rows = [], []
    for i in range(start, start + 24 * 14):
        code = history.conditions[i]
        ts = datetime.fromisoformat(str(history.hours[i].astype("datetime64[s]")))
        ts = ts.replace(tzinfo=UTC)
        row = builder.push(
            HourlyReading(
                ts=ts,
                condition=None if math.isnan(code) else CONDITIONS[int(code)],
                **{name: float(history.readings[name][i]) for name in READING_FIELDS},
            )
        )
        if row is None:
            continue
        prediction = engine.predict(Sample(ts=ts, input_id=str(i), features=row))
        assert prediction.label == (
            "rain" if prediction.scores["rain"] >= best.threshold else "no_rain"
        )
        agent_prob.append(prediction.scores["rain"])
        rows.append(feature_vector(row)[0])
    assert len(rows) > 24 * 12
    expected = predict_rain_gbt(best.model, np.asarray(rows, dtype=np.float32))
    np.testing.assert_allclose(np.asarray(agent_prob), expected, atol=PARITY)
    assert 0.0 < float(np.mean(agent_prob)) < 1.0


@pytest.mark.parametrize("kind", ["gbt", "keras"])
def test_pipeline_trains_and_exports_either_kind(kind: str, tmp_path: Path) -> None:
    settings = TrainSettings(
        data=sample_path(), quick=True, model_kind=kind, work_dir=tmp_path, register_model=False
    )
    outcome = train_weather(settings)
    assert outcome.export.max_abs_diff <= (PARITY if kind == "gbt" else 1e-4)
    assert ("iterations" in outcome.best) == (kind == "gbt")
    spec = read_spec(outcome.export.path)
    assert spec.decision_threshold == outcome.best["threshold"]
    engine = InferenceEngine.load(outcome.export.path)
    assert engine.spec.preprocessing.kind == "tabular"
    assert 0.0 < outcome.test_metrics["macro_f1"] <= 1.0


def test_benchmark_quick_mode_writes_every_figure(real_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    assert bench_main(["--quick", "--data", str(real_csv), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"folds", "summary", "winner", "goals"} <= set(result)
    years = [f["test_year"] for f in result["folds"]]
    assert len(years) >= 3 and years == sorted(years)
    for fold in result["folds"]:
        assert set(fold["models"]) == {"gbt", "keras", "persistence"}
        for figures in fold["models"].values():
            assert {"macro_f1", "no_rain_recall", "rain_recall", "ece", "goals_met"} <= set(figures)
        assert fold["models"]["gbt"]["onnx_max_abs_diff"] <= PARITY
        bounds = fold["boundaries"]
        assert bounds["validation_start"] < bounds["test_start"] < bounds["test_end"]
    assert result["winner"] in {"gbt", "keras"}
    assert set(result["summary"]) == {"gbt", "keras", "persistence"}
