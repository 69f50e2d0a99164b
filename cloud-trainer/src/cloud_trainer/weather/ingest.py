"""Station CSV → a validated, de-duplicated hourly UTC grid, with every repair counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.features.weather import CONDITIONS, READING_FIELDS, plausible_mask

log = logging.getLogger(__name__)

TIMESTAMP_COLUMN = "Timestamp"
CONDITION_COLUMN = "Weather_conditions"
READING_COLUMNS: dict[str, str] = {
    "Temperature_C": "temperature_c",
    "Apparent_Temperature_C": "apparent_temperature_c",
    "Humidity": "humidity",
    "Wind_speed_kmph": "wind_speed_kmph",
    "Wind_bearing_degrees": "wind_bearing_deg",
    "Visibility_km": "visibility_km",
    "Pressure_millibars": "pressure_mb",
}
REQUIRED_COLUMNS = (TIMESTAMP_COLUMN, *READING_COLUMNS, CONDITION_COLUMN)
# Above this share of unusable timestamps the file is not a station history of this format.
MAX_BAD_TIMESTAMP_SHARE = 0.5
# Timestamps outside this window are typos (the grid between them would be millions of hours).
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
FUTURE_SLACK = pd.Timedelta(days=1)


class WeatherDataError(ValueError):
    """The file cannot be used as a station history; the message says what is wrong."""


class DataReport(BaseModel):
    """Counts of every repair made to the raw file, saved with each run."""

    model_config = ConfigDict(extra="forbid")

    source: str
    rows_read: int = 0
    unparsable_timestamps: int = 0
    implausible_timestamps: int = Field(
        default=0, description="Before 1970 or in the future: dropped."
    )
    naive_timestamps_assumed_utc: int = 0
    utc_offsets: dict[str, int] = Field(default_factory=dict)
    backward_time_jumps: int = 0
    off_hour_timestamps: int = 0
    duplicate_hours_identical: int = 0
    duplicate_hours_conflicting: int = 0
    non_numeric_values: dict[str, int] = Field(default_factory=dict)
    implausible_values: dict[str, int] = Field(
        default_factory=dict, description="Sensor faults (e.g. pressure 0) turned into missing."
    )
    missing_conditions: int = 0
    unknown_conditions: dict[str, int] = Field(default_factory=dict)
    missing_hours: int = 0
    hours: int = 0
    first_hour: str | None = None
    last_hour: str | None = None
    missing_after_cleaning: dict[str, int] = Field(default_factory=dict)


@dataclass(frozen=True)
class HourlyHistory:
    """Consecutive UTC hours: raw readings (NaN = missing) and condition codes."""

    hours: np.ndarray  # datetime64[h], one hour apart
    readings: dict[str, np.ndarray]
    conditions: np.ndarray  # float codes into CONDITIONS, NaN = missing

    def __len__(self) -> int:
        return int(self.hours.size)


def read_station_csv(path: Path) -> pd.DataFrame:
    """The raw table, or WeatherDataError naming what is unreadable or missing."""
    if not path.is_file():
        raise WeatherDataError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise WeatherDataError(f"{path}: not a readable CSV file: {e}") from e
    except EOFError as e:
        raise WeatherDataError(f"{path}: truncated compressed file: {e}") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise WeatherDataError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"expected {', '.join(REQUIRED_COLUMNS)}"
        )
    if frame.empty:
        raise WeatherDataError(f"{path}: no data rows")
    return frame


def _parse_timestamps(raw: pd.Series, report: DataReport) -> pd.Series:
    text = raw.fillna("").str.strip()
    offsets = text.str.extract(r"([+-]\d{2}:?\d{2}|Z)$")[0]
    report.utc_offsets = {str(k): int(v) for k, v in offsets.value_counts().sort_index().items()}
    report.naive_timestamps_assumed_utc = int((offsets.isna() & (text != "")).sum())
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    report.unparsable_timestamps = int(parsed.isna().sum())
    outside = (parsed < EARLIEST) | (parsed > pd.Timestamp.now(tz="UTC") + FUTURE_SLACK)
    report.implausible_timestamps = int(outside.sum())
    return parsed.mask(outside)


def clean_station_table(frame: pd.DataFrame, source: str) -> tuple[HourlyHistory, DataReport]:
    """Validate and repair a raw table: UTC, hourly, ordered, de-duplicated, faults as missing."""
    report = DataReport(source=source, rows_read=len(frame))
    ts = _parse_timestamps(frame[TIMESTAMP_COLUMN], report)
    bad = report.unparsable_timestamps + report.implausible_timestamps
    if bad > MAX_BAD_TIMESTAMP_SHARE * len(frame):
        example = frame.loc[ts.isna(), TIMESTAMP_COLUMN].iloc[0]
        raise WeatherDataError(
            f"{source}: {bad} of {len(frame)} timestamps cannot be parsed or are implausible "
            f"(e.g. {example!r}); expected ISO 8601 such as 2006-04-01 00:00:00+02:00"
        )
    data = pd.DataFrame({"ts": ts})
    for column, name in READING_COLUMNS.items():
        text = frame[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        non_numeric = int((values.isna() & text.notna()).sum())
        if non_numeric:
            report.non_numeric_values[name] = non_numeric
        if non_numeric == len(frame):
            raise WeatherDataError(f"{source}: column {column} holds no numbers")
        ok = plausible_mask(name, values.to_numpy(dtype=np.float64))
        implausible = int((~ok & values.notna().to_numpy()).sum())
        if implausible:
            report.implausible_values[name] = implausible
        data[name] = np.where(ok, values.to_numpy(dtype=np.float64), np.nan)
    condition = frame[CONDITION_COLUMN].str.strip().str.lower()
    known = condition.isin(CONDITIONS)
    report.missing_conditions = int(condition.isna().sum())
    unknown = condition[~known & condition.notna()]
    report.unknown_conditions = {str(k): int(v) for k, v in unknown.value_counts().items()}
    data["condition"] = condition.map({c: float(i) for i, c in enumerate(CONDITIONS)})

    data = data[data["ts"].notna()]
    hours_ns = data["ts"].dt.floor("h")
    report.off_hour_timestamps = int((hours_ns != data["ts"]).sum())
    data = data.assign(hour=hours_ns)
    report.backward_time_jumps = int((data["hour"].diff() < pd.Timedelta(0)).sum())
    data = data.sort_values("hour", kind="stable")
    value_columns = [*READING_FIELDS, "condition"]
    dup = data.duplicated("hour", keep="first")
    if dup.any():
        exact = data.duplicated(["hour", *value_columns], keep="first")
        report.duplicate_hours_identical = int(exact.sum())
        report.duplicate_hours_conflicting = int((dup & ~exact).sum())
    data = data[~dup].set_index("hour")
    if data.empty:
        raise WeatherDataError(f"{source}: no rows with a usable timestamp")

    grid = pd.date_range(data.index[0], data.index[-1], freq="h")
    report.missing_hours = len(grid) - len(data)
    data = data.reindex(grid)
    report.hours = len(grid)
    report.first_hour = grid[0].isoformat()
    report.last_hour = grid[-1].isoformat()
    report.missing_after_cleaning = {c: int(data[c].isna().sum()) for c in value_columns}
    hours = grid.tz_convert(None).to_numpy().astype("datetime64[h]")
    history = HourlyHistory(
        hours=hours,
        readings={name: data[name].to_numpy(dtype=np.float64) for name in READING_FIELDS},
        conditions=data["condition"].to_numpy(dtype=np.float64),
    )
    log.info(
        "%s: %s rows → %s hours (%s missing, %s duplicates, %s faults)",
        source,
        report.rows_read,
        report.hours,
        report.missing_hours,
        report.duplicate_hours_identical + report.duplicate_hours_conflicting,
        sum(report.implausible_values.values()),
    )
    return history, report


def load_station_history(path: Path) -> tuple[HourlyHistory, DataReport]:
    """Read and clean a station CSV (plain or gzip) of the ``weather_dataset_raw`` format."""
    return clean_station_table(read_station_csv(path), str(path))
