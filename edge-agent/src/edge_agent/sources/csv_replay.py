"""Weather station replayed from the raw station CSV, in real time, accelerated or flat out."""

from __future__ import annotations

import collections
import csv
import gzip
import io
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO

from pydantic import Field

from edge_agent.config.base import ConfigModel
from edge_agent.features.weather import READING_FIELDS
from edge_agent.sources.sample import Sample, SourceClosed, SourceError
from edge_agent.sources.station import (
    ReadingRejected,
    StationPipeline,
    StationReading,
    parse_reading,
)

log = logging.getLogger(__name__)

# Raw station CSV column for each reading field (the "weather_dataset_raw.csv" schema).
CSV_COLUMNS: dict[str, str] = {
    "temperature_c": "Temperature_C",
    "apparent_temperature_c": "Apparent_Temperature_C",
    "humidity": "Humidity",
    "wind_speed_kmph": "Wind_speed_kmph",
    "wind_bearing_deg": "Wind_bearing_degrees",
    "visibility_km": "Visibility_km",
    "pressure_mb": "Pressure_millibars",
}
TIMESTAMP_COLUMN = "Timestamp"
CONDITION_COLUMN = "Weather_conditions"


class CsvReplaySourceConfig(ConfigModel):
    """Replays a station's raw CSV (``.csv`` or ``.csv.gz``) as if the station were live."""

    type: Literal["csv_replay"] = Field(title="Type", description="Source plugin: CSV replay.")
    name: str = Field(
        default="station", min_length=1, max_length=64, title="Name", description="Source name."
    )
    path: Path = Field(title="CSV file", description="Raw station CSV, optionally gzipped.")
    speed: float | None = Field(
        default=None,
        gt=0,
        title="Speed",
        description="Replay speed: 1 is real time, 3600 an hour per second; null replays as "
        "fast as the reader takes samples.",
    )
    order: Literal["file", "time"] = Field(
        default="time",
        title="Order",
        description="'time' sorts rows by timestamp first (duplicates are still rejected); "
        "'file' replays rows as written, rejecting out-of-order ones as a live station's "
        "would be. Exports written in blocks out of time order need 'time'.",
    )
    skip_rows: int = Field(
        default=0, ge=0, title="Skip rows", description="Data rows to skip at the start."
    )
    max_rows: int | None = Field(
        default=None, ge=1, title="Maximum rows", description="Stop after this many rows."
    )


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def row_to_reading(row: dict[str, str]) -> StationReading:
    return parse_reading(
        row.get(TIMESTAMP_COLUMN),
        (row.get(CSV_COLUMNS[name]) for name in READING_FIELDS),
        row.get(CONDITION_COLUMN),
    )


class CsvReplaySource:
    """Streams rows (the file is never loaded whole, unless ``order: time``)."""

    def __init__(self, config: CsvReplaySourceConfig) -> None:
        self.config = config
        self.name = config.name
        self.counters: collections.Counter[str] = collections.Counter()
        self.pipeline = StationPipeline(self.counters)
        try:
            self._fh = _open_text(config.path)
            reader = csv.DictReader(self._fh)
            header = reader.fieldnames or []
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SourceError(f"cannot read station CSV {config.path}: {e}") from e
        needed = [TIMESTAMP_COLUMN, *CSV_COLUMNS.values()]
        missing = [c for c in needed if c not in header]
        if missing:
            self._fh.close()
            raise SourceError(f"{config.path}: missing column(s) {', '.join(missing)}")
        self._readings = self._iterate(reader)
        self._ready: collections.deque[Sample] = collections.deque()
        self._first_ts: datetime | None = None
        self._anchor = 0.0
        self._pending: tuple[float, StationReading] | None = None
        self._done = False

    def _rows(self, reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
        limit = self.config.max_rows
        for n, row in enumerate(reader):
            if n < self.config.skip_rows:
                continue
            if limit is not None and n - self.config.skip_rows >= limit:
                return
            yield reader.line_num, row

    def _iterate(self, reader: csv.DictReader[str]) -> Iterator[StationReading]:
        if self.config.order == "file":
            for line, row in self._rows(reader):
                reading = self._parse(line, row)
                if reading is not None:
                    yield reading
            return
        parsed = [r for line, row in self._rows(reader) if (r := self._parse(line, row))]
        parsed.sort(key=lambda r: r.ts)
        yield from parsed

    def _parse(self, line: int, row: dict[str, str]) -> StationReading | None:
        try:
            return row_to_reading(row)
        except ReadingRejected as e:
            self.pipeline.reject(ReadingRejected(e.reason, f"{self.config.path}:{line}: {e}"))
            log.debug("station %s: %s", self.name, self.pipeline.last_rejection)
            return None
        except csv.Error as e:
            self.pipeline.reject(ReadingRejected("malformed", f"{self.config.path}:{line}: {e}"))
            return None

    def _due(self, reading: StationReading) -> float:
        """Wall-clock time this reading is replayed at (monotonic seconds)."""
        if self.config.speed is None:
            return 0.0
        if self._first_ts is None:
            self._first_ts = reading.ts
            self._anchor = time.monotonic()
        offset = (reading.ts - self._first_ts).total_seconds() / self.config.speed
        return self._anchor + max(0.0, offset)

    def read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._ready:
            if self._done:
                raise SourceClosed(f"station replay {self.config.path} ended")
            if self._pending is None:
                reading = next(self._readings, None)
                if reading is None:
                    self._ready.extend(self.pipeline.close_hour())
                    self._done = True
                    self._fh.close()
                    continue
                self._pending = (self._due(reading), reading)
            due, reading = self._pending
            now = time.monotonic()
            if due > deadline:
                time.sleep(max(0.0, deadline - now))
                return None
            if due > now:
                time.sleep(due - now)
            self._pending = None
            self._ready.extend(self.pipeline.offer(reading))
        return self._ready.popleft()

    def close(self) -> None:
        self._done = True
        self._ready.clear()
        self._fh.close()
