"""Rolling-origin folds by calendar year: train before Y-1, calibrate on Y-1, test on Y."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from cloud_trainer.weather.dataset import (
    HORIZON_HOURS,
    LABELS,
    MIN_ROWS_PER_CALENDAR_PART,
    LabelledRows,
    SplitRows,
)
from cloud_trainer.weather.evaluation import classification_metrics
from cloud_trainer.weather.ingest import WeatherDataError

# What the forecaster should reach on a year it never saw (macro-F1 at the threshold chosen
# on the year before, recall of the rare no_rain class, expected calibration error).
GOALS: dict[str, float] = {"macro_f1": 0.88, "no_rain_recall": 0.75, "ece": 0.03}


class YearFold(BaseModel):
    """One fold's boundaries (UTC hours, ISO text): train < validation < test, in time order.

    ``purge_hours`` rows before each boundary are dropped: their label (the condition
    ``horizon`` hours on) lies on the other side of it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_year: int
    train_start: str
    validation_start: str
    test_start: str
    test_end: str
    purge_hours: int


def _year_start(year: int) -> np.datetime64:
    return np.datetime64(f"{year:04d}-01-01T00", "h")


def calendar_years(hours: npt.NDArray[np.datetime64]) -> list[int]:
    """UTC calendar years holding at least half a year of rows."""
    years, counts = np.unique(
        hours.astype("datetime64[Y]").astype(np.int64) + 1970, return_counts=True
    )
    return [int(y) for y, n in zip(years, counts, strict=True) if n >= MIN_ROWS_PER_CALENDAR_PART]


def rolling_origin_folds(
    hours: npt.NDArray[np.datetime64],
    n_folds: int = 4,
    test_years: Sequence[int] | None = None,
    train_years: int | None = None,
    min_train_years: int = 2,
    horizon_hours: int = HORIZON_HOURS,
) -> list[YearFold]:
    """Folds testing on each of ``test_years`` (default: the last ``n_folds`` possible).

    A test year Y needs Y and Y-1 (validation) among ``calendar_years`` and at least
    ``min_train_years`` of them before Y-1; training uses every earlier hour, or only the
    last ``train_years`` years when given (faster, for quick runs).
    """
    years = calendar_years(hours)
    possible = [
        y for y in years if y - 1 in years and sum(1 for t in years if t < y - 1) >= min_train_years
    ]
    chosen = list(test_years) if test_years is not None else possible[-n_folds:]
    unusable = sorted(set(chosen) - set(possible))
    if unusable or not chosen:
        raise WeatherDataError(
            f"cannot test on years {unusable or chosen}: each needs itself, the year before "
            f"and {min_train_years} earlier years of data (usable test years: {possible})"
        )
    first = hours.min()
    folds = []
    for year in sorted(chosen):
        validation_start = _year_start(year - 1)
        train_start = first if train_years is None else _year_start(year - 1 - train_years)
        folds.append(
            YearFold(
                test_year=year,
                train_start=str(max(first, train_start)),
                validation_start=str(validation_start),
                test_start=str(_year_start(year)),
                test_end=str(_year_start(year + 1)),
                purge_hours=horizon_hours,
            )
        )
    return folds


def fold_rows(rows: LabelledRows, fold: YearFold) -> SplitRows:
    """The fold's train, validation and test rows, with the purge before each boundary."""
    h = rows.hours
    purge = np.timedelta64(fold.purge_hours, "h")
    train_start = np.datetime64(fold.train_start, "h")
    validation_start = np.datetime64(fold.validation_start, "h")
    test_start = np.datetime64(fold.test_start, "h")
    test_end = np.datetime64(fold.test_end, "h")
    split = SplitRows(
        train=rows.take((h >= train_start) & (h + purge < validation_start)),
        validation=rows.take((h >= validation_start) & (h + purge < test_start)),
        test=rows.take((h >= test_start) & (h < test_end)),
    )
    for name, part in (("train", split.train), ("validation", split.validation)):
        if len(part) == 0 or np.unique(part.y).size < 2:
            raise WeatherDataError(f"{fold.test_year}: the {name} part lacks one of the labels")
    if len(split.test) == 0:
        raise WeatherDataError(f"{fold.test_year}: no test rows")
    return split


def forecast_figures(
    y: npt.NDArray[np.int64], prob: npt.NDArray[np.float64] | None, predicted: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """The figures compared per test year. A hard forecast (``prob`` None, e.g. persistence)
    is scored for calibration as if it said probability 0 or 1."""
    scores = predicted.astype(np.float64) if prob is None else prob
    m = classification_metrics(y, predicted, scores)
    no_rain, rain = (m["per_class"][label] for label in LABELS)
    return {
        "n_rows": m["n_rows"],
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "no_rain_recall": no_rain["recall"],
        "no_rain_precision": no_rain["precision"],
        "rain_recall": rain["recall"],
        "rain_precision": rain["precision"],
        "ece": m["ece"],
        "brier": m["brier"],
        "roc_auc": None if prob is None else m["roc_auc"],
        "confusion_matrix": m["confusion_matrix"],
    }


def meets_goals(figures: dict[str, Any]) -> dict[str, bool]:
    """Per goal, whether ``figures`` reach it (ECE at most, the others at least)."""
    return {
        "macro_f1": figures["macro_f1"] >= GOALS["macro_f1"],
        "no_rain_recall": figures["no_rain_recall"] >= GOALS["no_rain_recall"],
        "ece": figures["ece"] <= GOALS["ece"],
    }
