"""Labels on the time axis, feature rows from the shared builder, a time split and its hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from cloud_trainer.weather.ingest import HourlyHistory, WeatherDataError
from edge_agent.features.weather import CONDITIONS, FEATURE_NAMES, compute_features

LABELS = ("no_rain", "rain")
POSITIVE_LABEL = "rain"
HORIZON_HOURS = 4
_RAIN = float(CONDITIONS.index("rain"))
# Histories shorter than this are split by share of time rather than by calendar year.
MIN_YEARS_FOR_CALENDAR_SPLIT = 3
MIN_ROWS_PER_CALENDAR_PART = 365 * 24 // 2


def rain_ahead(
    history: HourlyHistory, horizon_hours: int = HORIZON_HOURS
) -> npt.NDArray[np.float64]:
    """1.0 when the condition observed at t + horizon is rain, 0.0 when it is not, NaN unknown.

    The grid is consecutive hours, so position i + horizon *is* time t + horizon; a raw row
    shift on unsorted rows (which looks ``horizon`` rows back in time) cannot happen here.
    """
    codes = history.conditions
    future = np.full(codes.size, np.nan)
    if horizon_hours < codes.size:
        future[: codes.size - horizon_hours] = codes[horizon_hours:]
    return np.where(np.isfinite(future), (future == _RAIN).astype(np.float64), np.nan)


@dataclass(frozen=True)
class LabelledRows:
    """Model-ready rows: features (FEATURE_NAMES order), label, hour and persistence guess."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    hours: npt.NDArray[np.datetime64]
    persistence: npt.NDArray[np.int64]  # rain now → rain in 4 h
    dropped_incomplete_features: int
    dropped_no_label: int

    def __len__(self) -> int:
        return int(self.y.size)

    def take(self, mask: npt.NDArray[np.bool_]) -> LabelledRows:
        return LabelledRows(
            self.x[mask], self.y[mask], self.hours[mask], self.persistence[mask], 0, 0
        )


def labelled_rows(history: HourlyHistory, horizon_hours: int = HORIZON_HOURS) -> LabelledRows:
    """Rows with complete features and an observed label; the rest dropped and counted."""
    matrix, valid = compute_features(history.hours, history.readings, history.conditions)
    label = rain_ahead(history, horizon_hours)
    has_label = np.isfinite(label)
    keep = valid & has_label
    rain_now = matrix[:, FEATURE_NAMES.index("cond_rain")]
    return LabelledRows(
        x=matrix[keep].astype(np.float32),
        y=label[keep].astype(np.int64),
        hours=history.hours[keep],
        persistence=rain_now[keep].astype(np.int64),
        dropped_incomplete_features=int((~valid & has_label).sum()),
        dropped_no_label=int((~has_label).sum()),
    )


class SplitBoundaries(BaseModel):
    """Train < validation_start ≤ validation < test_start ≤ test (UTC hours, ISO text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    validation_start: str
    test_start: str


def time_split(hours: npt.NDArray[np.datetime64]) -> SplitBoundaries:
    """The last year is the test set and the year before validation; never random over time.

    Histories without at least half a year of rows in each of those two years (a sample of a
    few months, or long outages) use the last 15 % of rows and the 15 % before them.
    """
    if hours.size < 20:
        raise WeatherDataError(f"only {hours.size} labelled hours: too few to split by time")
    first, last = hours.min(), hours.max()
    year = np.timedelta64(365 * 24, "h")
    if last - first >= MIN_YEARS_FOR_CALENDAR_SPLIT * year:
        test_start = last - year + np.timedelta64(1, "h")
        validation_start = test_start - year
        n_test = int((hours >= test_start).sum())
        n_validation = int(((hours >= validation_start) & (hours < test_start)).sum())
        if min(n_test, n_validation) >= MIN_ROWS_PER_CALENDAR_PART:
            return SplitBoundaries(
                rule="last 365 days test, 365 days before validation",
                validation_start=str(validation_start),
                test_start=str(test_start),
            )
    ordered = np.sort(hours)
    n = ordered.size
    return SplitBoundaries(
        rule="short history: last 15% test, 15% before validation",
        validation_start=str(ordered[int(n * 0.70)]),
        test_start=str(ordered[int(n * 0.85)]),
    )


@dataclass(frozen=True)
class SplitRows:
    train: LabelledRows
    validation: LabelledRows
    test: LabelledRows


def apply_split(rows: LabelledRows, bounds: SplitBoundaries) -> SplitRows:
    val_start = np.datetime64(bounds.validation_start, "h")
    test_start = np.datetime64(bounds.test_start, "h")
    split = SplitRows(
        train=rows.take(rows.hours < val_start),
        validation=rows.take((rows.hours >= val_start) & (rows.hours < test_start)),
        test=rows.take(rows.hours >= test_start),
    )
    for name, part in (
        ("train", split.train),
        ("validation", split.validation),
        ("test", split.test),
    ):
        if len(part) == 0 or np.unique(part.y).size < 2:
            raise WeatherDataError(f"the {name} split has no examples of both labels")
    return split


def data_version(history: HourlyHistory, bounds: SplitBoundaries) -> str:
    """Content hash of the cleaned hourly data and the split boundaries (16 hex digits)."""
    h = hashlib.sha256()
    h.update(history.hours.astype("int64").tobytes())
    for name in sorted(history.readings):
        h.update(name.encode())
        h.update(np.ascontiguousarray(history.readings[name], dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(history.conditions, dtype="<f8").tobytes())
    h.update(json.dumps(bounds.model_dump(), sort_keys=True).encode())
    return h.hexdigest()[:16]
