"""Calibration error on a hand example; rolling-origin folds in time order, without overlap."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import yaml

from cloud_trainer.export.trees_onnx import float32_at_most
from cloud_trainer.weather.dataset import HORIZON_HOURS, LabelledRows
from cloud_trainer.weather.evaluation import calibration_table, expected_calibration_error
from cloud_trainer.weather.ingest import WeatherDataError
from cloud_trainer.weather.rolling import (
    fold_rows,
    forecast_figures,
    meets_goals,
    rolling_origin_folds,
)
from cloud_trainer.weather.settings import TrainSettings

SPEC = Path(__file__).resolve().parents[2] / "models" / "weather" / "spec.yaml"


def test_ece_on_a_hand_example() -> None:
    # Bin [0.1, 0.2): predicted 0.15 twice, observed 0 and 1 → |0.15 - 0.5| = 0.35, 2 rows.
    # Bin [0.8, 0.9): predicted 0.85 ×3, observed 1, 1, 1 → |0.85 - 1.0| = 0.15, 3 rows.
    # Bin [0.9, 1.0]: predicted 1.0, observed 1 → 0, 1 row (1.0 lands in the last bin).
    y = np.array([0, 1, 1, 1, 1, 1])
    prob = np.array([0.15, 0.15, 0.85, 0.85, 0.85, 1.0])
    table = calibration_table(y, prob, bins=10)
    assert [r["low"] for r in table] == pytest.approx([0.1, 0.8, 0.9])
    assert [r["count"] for r in table] == [2, 3, 1]
    ece = expected_calibration_error(table, y.size)
    assert ece == pytest.approx((2 * 0.35 + 3 * 0.15 + 1 * 0.0) / 6)


def test_ece_is_zero_when_calibrated_and_hard_forecasts_pay_their_errors() -> None:
    y = np.array([0, 0, 0, 1] * 25)
    assert expected_calibration_error(calibration_table(y, np.full(100, 0.25)), 100) == (
        pytest.approx(0.0)
    )
    # A 0/1 forecast scored as a probability: ECE equals its error rate.
    wrong = np.array([1, 0, 0, 1] * 25)
    figures = forecast_figures(y, None, wrong)
    assert figures["ece"] == pytest.approx(0.25)
    assert figures["roc_auc"] is None
    assert figures["no_rain_recall"] == pytest.approx(2 / 3) and figures["rain_recall"] == 1.0


def hourly_grid(first: str, last: str, holes: int = 0) -> np.ndarray:
    hours = np.arange(np.datetime64(first, "h"), np.datetime64(last, "h") + 1)
    if holes:
        keep = np.ones(hours.size, dtype=bool)
        keep[np.random.default_rng(3).choice(hours.size, holes, replace=False)] = False
        hours = hours[keep]
    return hours


def rows_for(hours: np.ndarray) -> LabelledRows:
    n = hours.size
    y = (np.arange(n) % 7 != 0).astype(np.int64)
    shuffled = np.random.default_rng(0).permutation(n)  # order must not matter
    return LabelledRows(
        np.zeros((n, 3), np.float32)[shuffled],
        y[shuffled],
        hours[shuffled],
        y[shuffled],
        0,
        0,
    )


def test_folds_are_in_time_order_and_never_overlap() -> None:
    hours = hourly_grid("2006-01-01T00", "2015-12-31T23", holes=500)
    folds = rolling_origin_folds(hours, n_folds=4)
    assert [f.test_year for f in folds] == [2012, 2013, 2014, 2015]
    rows = rows_for(hours)
    for fold in folds:
        split = fold_rows(rows, fold)
        train, validation, test = split.train.hours, split.validation.hours, split.test.hours
        # Time order, with the label horizon purged before each boundary.
        assert train.max() + np.timedelta64(HORIZON_HOURS, "h") < validation.min()
        assert validation.max() + np.timedelta64(HORIZON_HOURS, "h") < test.min()
        assert not set(train.tolist()) & set(validation.tolist())
        assert not set(validation.tolist()) & set(test.tolist())
        assert not set(train.tolist()) & set(test.tolist())
        # The test part is exactly the calendar year, validation the year before.
        years = test.astype("datetime64[Y]").astype(int) + 1970
        assert set(years.tolist()) == {fold.test_year}
        assert str(validation.min()).startswith(f"{fold.test_year - 1}-01-01")
        assert str(train.min()).startswith("2006-01-01")
    tests = [fold_rows(rows, f).test.hours for f in folds]
    for earlier, later in pairwise(tests):
        assert earlier.max() < later.min()


def test_train_window_and_chosen_years() -> None:
    hours = hourly_grid("2006-01-01T00", "2015-12-31T23")
    folds = rolling_origin_folds(hours, test_years=[2015, 2010], train_years=2)
    assert [f.test_year for f in folds] == [2010, 2015]
    assert folds[1].train_start.startswith("2012-01-01")
    assert folds[1].validation_start.startswith("2014-01-01")


def test_years_without_history_are_refused() -> None:
    hours = hourly_grid("2013-01-01T00", "2015-12-31T23")
    with pytest.raises(WeatherDataError, match="cannot test on years"):
        rolling_origin_folds(hours, test_years=[2015])  # only one year to train on
    short = hourly_grid("2015-01-01T00", "2015-04-30T23")
    with pytest.raises(WeatherDataError, match="usable test years: \\[\\]"):
        rolling_origin_folds(short)


def test_goals() -> None:
    good = {"macro_f1": 0.9, "no_rain_recall": 0.75, "ece": 0.03}
    assert all(meets_goals(good).values())
    assert meets_goals({**good, "ece": 0.031}) == {
        "macro_f1": True,
        "no_rain_recall": True,
        "ece": False,
    }


@pytest.mark.parametrize("value", [0.1, 1013.25, -3.7, 1e-9, 0.5, 17.000000001])
def test_tree_thresholds_round_down_to_float32(value: float) -> None:
    t = float32_at_most(value)
    assert t <= value
    above = float(np.nextafter(np.float32(t), np.float32(np.inf)))
    assert above > value  # no float32 between the rounded threshold and the real one


def test_spec_file_names_the_default_model_kind() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    default = TrainSettings.model_fields["model_kind"].default
    assert spec["model"]["default"] == default == "gbt"
    assert spec["model"]["alternative"] == "keras"
