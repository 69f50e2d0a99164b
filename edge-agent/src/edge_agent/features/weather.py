"""Weather-station features (``weather-hourly-v1``): one definition for training and devices."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

FEATURE_SET = "weather-hourly-v1"

# Raw per-hour quantities a station reports, in the order the builder stores them.
READING_FIELDS: tuple[str, ...] = (
    "temperature_c",
    "apparent_temperature_c",
    "humidity",
    "wind_speed_kmph",
    "wind_bearing_deg",
    "visibility_km",
    "pressure_mb",
)
CONDITIONS: tuple[str, ...] = ("rain", "snow", "clear")

# Plausible physical ranges (inclusive). A value outside is a sensor fault, not weather:
# the stations report 0 for pressure, humidity and visibility when a sensor fails.
VALID_RANGES: dict[str, tuple[float, float]] = {
    "temperature_c": (-60.0, 60.0),
    "apparent_temperature_c": (-80.0, 70.0),
    "humidity": (0.01, 1.0),
    "wind_speed_kmph": (0.0, 250.0),
    "wind_bearing_deg": (0.0, 360.0),
    "visibility_km": (0.01, 100.0),
    "pressure_mb": (870.0, 1090.0),
}

# Hours back used by lags and trends, and how long a missing value is carried forward.
MAX_LAG_HOURS = 6
MAX_FILL_HOURS = 3
MIN_HISTORY_HOURS = MAX_LAG_HOURS + MAX_FILL_HOURS + 1

FEATURE_NAMES: tuple[str, ...] = (
    "temperature_c",
    "apparent_temperature_c",
    "humidity",
    "wind_speed_kmph",
    "wind_bearing_sin",
    "wind_bearing_cos",
    "visibility_km",
    "pressure_mb",
    "cond_rain",
    "cond_snow",
    "cond_clear",
    "hour_sin",
    "hour_cos",
    "doy_sin",
    "doy_cos",
    "temperature_delta_1h",
    "temperature_delta_3h",
    "temperature_delta_6h",
    "apparent_delta_3h",
    "humidity_delta_1h",
    "humidity_delta_3h",
    "pressure_delta_3h",
    "pressure_delta_6h",
    "visibility_delta_3h",
    "wind_speed_delta_3h",
    "cond_rain_lag_1h",
    "cond_rain_lag_3h",
    "cond_snow_lag_3h",
    "cond_clear_lag_3h",
)

_HOUR = np.timedelta64(1, "h")


class ReadingOrderError(ValueError):
    """A reading arrived for an hour at or before one already pushed."""


@dataclass(frozen=True)
class HourlyReading:
    """One station observation for the hour starting at ``ts`` (UTC); NaN marks a missing value."""

    ts: datetime
    temperature_c: float
    apparent_temperature_c: float
    humidity: float
    wind_speed_kmph: float
    wind_bearing_deg: float
    visibility_km: float
    pressure_mb: float
    condition: str | None = None


def is_plausible(name: str, value: float) -> bool:
    """True when ``value`` is a finite reading inside ``VALID_RANGES[name]``."""
    low, high = VALID_RANGES[name]
    return math.isfinite(value) and low <= value <= high


def plausible_mask(name: str, values: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Vectorised ``is_plausible``: NaN and out-of-range values are False."""
    x = np.asarray(values, dtype=np.float64)
    low, high = VALID_RANGES[name]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (x >= low) & (x <= high)


def condition_code(condition: str | None) -> float:
    """Index of a condition in ``CONDITIONS`` as a float, NaN when missing or unknown."""
    if condition is None:
        return math.nan
    try:
        return float(CONDITIONS.index(condition.strip().lower()))
    except ValueError:
        return math.nan


def _hour_index(ts: datetime) -> np.datetime64:
    if ts.tzinfo is None:
        raise ValueError(f"reading timestamp {ts.isoformat()} has no time zone; UTC expected")
    utc = ts.astimezone(UTC)
    if utc.minute or utc.second or utc.microsecond:
        raise ValueError(f"reading timestamp {utc.isoformat()} is not on the hour")
    return np.datetime64(utc.replace(tzinfo=None), "h")


def _forward_fill(x: npt.NDArray[np.float64], limit: int) -> npt.NDArray[np.float64]:
    """Carry the last finite value forward at most ``limit`` steps; older gaps stay NaN."""
    n = x.size
    positions = np.arange(n)
    last = np.where(np.isfinite(x), positions, -1)
    np.maximum.accumulate(last, out=last)
    filled = np.full(n, np.nan)
    ok = (last >= 0) & (positions - last <= limit)
    filled[ok] = x[last[ok]]
    return filled


def _lag(x: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
    out = np.full(x.size, np.nan)
    if k < x.size:
        out[k:] = x[: x.size - k]
    return out


def compute_features(
    hours: npt.ArrayLike,
    readings: Mapping[str, npt.ArrayLike],
    conditions: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Features for consecutive hours (rows ``FEATURE_NAMES``) and a mask of complete rows.

    ``hours`` are UTC hours (``datetime64``) one hour apart; missing hours are rows of NaN.
    ``readings`` holds one array per ``READING_FIELDS`` entry (raw: implausible values are
    treated as missing here), ``conditions`` the codes from ``condition_code``. Missing values
    are carried forward up to ``MAX_FILL_HOURS``; a row whose inputs are still missing is not
    valid (its features are NaN). The device's ``WeatherFeatureBuilder`` calls this same
    function on its recent history, which is what keeps training and serving identical.
    """
    h = np.asarray(hours, dtype="datetime64[h]")
    n = h.size
    if n > 1 and not np.all(np.diff(h) == _HOUR):
        raise ValueError("hours must be consecutive, one hour apart (fill gaps with NaN rows)")
    missing = [name for name in READING_FIELDS if name not in readings]
    if missing:
        raise ValueError(f"readings lack {', '.join(missing)}")
    filled: dict[str, npt.NDArray[np.float64]] = {}
    for name in READING_FIELDS:
        raw = np.asarray(readings[name], dtype=np.float64)
        if raw.shape != (n,):
            raise ValueError(f"readings[{name!r}] has shape {raw.shape}, expected ({n},)")
        clean = np.where(plausible_mask(name, raw), raw, np.nan)
        filled[name] = _forward_fill(clean, MAX_FILL_HOURS)
    codes = np.asarray(conditions, dtype=np.float64)
    if codes.shape != (n,):
        raise ValueError(f"conditions has shape {codes.shape}, expected ({n},)")
    cond = _forward_fill(codes, MAX_FILL_HOURS)
    onehot = {
        c: np.where(np.isfinite(cond), (cond == i).astype(np.float64), np.nan)
        for i, c in enumerate(CONDITIONS)
    }

    temp = filled["temperature_c"]
    bearing = np.deg2rad(filled["wind_bearing_deg"])
    hour_of_day = (h - h.astype("datetime64[D]")).astype(np.int64).astype(np.float64)
    day_of_year = (h.astype("datetime64[D]") - h.astype("datetime64[Y]")).astype(np.int64)
    year_frac = (day_of_year.astype(np.float64) + hour_of_day / 24.0) / 365.25
    tau = 2.0 * np.pi

    def delta(x: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
        return x - _lag(x, k)

    columns: dict[str, npt.NDArray[np.float64]] = {
        "temperature_c": temp,
        "apparent_temperature_c": filled["apparent_temperature_c"],
        "humidity": filled["humidity"],
        "wind_speed_kmph": filled["wind_speed_kmph"],
        "wind_bearing_sin": np.sin(bearing),
        "wind_bearing_cos": np.cos(bearing),
        "visibility_km": filled["visibility_km"],
        "pressure_mb": filled["pressure_mb"],
        "cond_rain": onehot["rain"],
        "cond_snow": onehot["snow"],
        "cond_clear": onehot["clear"],
        "hour_sin": np.sin(tau * hour_of_day / 24.0),
        "hour_cos": np.cos(tau * hour_of_day / 24.0),
        "doy_sin": np.sin(tau * year_frac),
        "doy_cos": np.cos(tau * year_frac),
        "temperature_delta_1h": delta(temp, 1),
        "temperature_delta_3h": delta(temp, 3),
        "temperature_delta_6h": delta(temp, 6),
        "apparent_delta_3h": delta(filled["apparent_temperature_c"], 3),
        "humidity_delta_1h": delta(filled["humidity"], 1),
        "humidity_delta_3h": delta(filled["humidity"], 3),
        "pressure_delta_3h": delta(filled["pressure_mb"], 3),
        "pressure_delta_6h": delta(filled["pressure_mb"], 6),
        "visibility_delta_3h": delta(filled["visibility_km"], 3),
        "wind_speed_delta_3h": delta(filled["wind_speed_kmph"], 3),
        "cond_rain_lag_1h": _lag(onehot["rain"], 1),
        "cond_rain_lag_3h": _lag(onehot["rain"], 3),
        "cond_snow_lag_3h": _lag(onehot["snow"], 3),
        "cond_clear_lag_3h": _lag(onehot["clear"], 3),
    }
    matrix = (
        np.column_stack([columns[name] for name in FEATURE_NAMES])
        if n
        else np.empty((0, len(FEATURE_NAMES)))
    )
    valid = np.all(np.isfinite(matrix), axis=1)
    matrix[~valid] = np.nan
    return matrix, valid


class WeatherFeatureBuilder:
    """Streaming features for one station: push each hourly reading, get a feature row.

    Keeps the last ``history_hours`` hours; an hour that never arrived is a gap of NaN,
    carried over like any missing value, so a single lost reading costs nothing and a long
    outage yields ``None`` until enough fresh history has accumulated.
    """

    def __init__(self, history_hours: int = MIN_HISTORY_HOURS) -> None:
        if history_hours < MIN_HISTORY_HOURS:
            raise ValueError(f"history_hours must be at least {MIN_HISTORY_HOURS}")
        self.history_hours = history_hours
        self._hours: list[np.datetime64] = []
        self._rows: list[list[float]] = []
        self._codes: list[float] = []

    @property
    def last_hour(self) -> datetime | None:
        if not self._hours:
            return None
        return datetime.fromisoformat(str(self._hours[-1].astype("datetime64[s]"))).replace(
            tzinfo=UTC
        )

    def push(self, reading: HourlyReading) -> dict[str, float] | None:
        """Add one reading; the features for its hour, or None while history is too thin."""
        hour = _hour_index(reading.ts)
        if self._hours:
            last = self._hours[-1]
            if hour <= last:
                raise ReadingOrderError(
                    f"reading for {reading.ts.isoformat()} is not after the last one ({last})"
                )
            gap = int((hour - last) // _HOUR) - 1
            if gap >= self.history_hours:
                self._hours.clear()
                self._rows.clear()
                self._codes.clear()
            else:
                for k in range(1, gap + 1):
                    self._append(last + k * _HOUR, None)
        self._append(hour, reading)
        matrix, valid = compute_features(
            np.asarray(self._hours, dtype="datetime64[h]"),
            {name: np.asarray([r[i] for r in self._rows]) for i, name in enumerate(READING_FIELDS)},
            np.asarray(self._codes),
        )
        if not valid[-1]:
            return None
        return dict(zip(FEATURE_NAMES, (float(v) for v in matrix[-1]), strict=True))

    def _append(self, hour: np.datetime64, reading: HourlyReading | None) -> None:
        if reading is None:
            self._rows.append([math.nan] * len(READING_FIELDS))
            self._codes.append(math.nan)
        else:
            self._rows.append([float(getattr(reading, name)) for name in READING_FIELDS])
            self._codes.append(condition_code(reading.condition))
        self._hours.append(hour)
        if len(self._hours) > self.history_hours:
            del self._hours[0], self._rows[0], self._codes[0]


def feature_vector(
    features: Mapping[str, float], order: Sequence[str] = FEATURE_NAMES
) -> npt.NDArray[np.float32]:
    """A batch of one input row in the model's column order (from its ``TabularPreprocessing``)."""
    unknown = [name for name in order if name not in features]
    if unknown:
        raise KeyError(f"features lack {', '.join(unknown)}")
    return np.asarray([[features[name] for name in order]], dtype=np.float32)
