"""Weather-station readings: parsing, validation with counted rejections, hourly aggregation."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import Field

from edge_agent.features.weather import (
    READING_FIELDS,
    VALID_RANGES,
    HourlyReading,
    ReadingOrderError,
    WeatherFeatureBuilder,
)
from edge_agent.sources.sample import Sample

HOUR = timedelta(hours=1)

# Config field types of the live sources (serial, MQTT); the defaults stay at each use so
# type checkers see them: ``max_age_s: MaxAgeSeconds = 3600.0``.
MaxAgeSeconds = Annotated[
    float, Field(gt=0, title="Maximum age", description="Older readings are stale.")
]
MaxFutureSeconds = Annotated[
    float,
    Field(
        gt=0,
        title="Maximum clock lead",
        description="Readings further ahead of the device clock are rejected as future.",
    ),
]
CloseAfterSeconds = Annotated[
    float,
    Field(
        ge=0,
        title="Hour close delay",
        description="Close an hour this long after its end even if no later reading came.",
    ),
]


class ReadingRejected(ValueError):
    """A reading that must not reach the model; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StationReading:
    """One raw observation, at any time within an hour; values in ``READING_FIELDS`` order."""

    ts: datetime
    values: tuple[float, ...]
    condition: str | None = None


def parse_timestamp(raw: object) -> datetime:
    """ISO 8601 with a zone (``Z`` or an offset), or Unix seconds; always returned in UTC."""
    if isinstance(raw, bool):
        raise ReadingRejected("malformed", f"timestamp {raw!r} is not a time")
    if isinstance(raw, int | float):
        try:
            seconds = float(raw)
            if not math.isfinite(seconds):
                raise ReadingRejected("malformed", f"timestamp {raw!r} is not finite")
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as e:
            raise ReadingRejected("malformed", f"timestamp {raw!r} is out of range") from e
    if not isinstance(raw, str):
        raise ReadingRejected("malformed", f"timestamp {raw!r} is not text or a number")
    text = raw.strip()
    try:
        ts = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError as e:
        raise ReadingRejected("malformed", f"timestamp {text!r} is not ISO 8601") from e
    if ts.tzinfo is None:
        raise ReadingRejected("malformed", f"timestamp {text!r} has no time zone")
    try:
        return ts.astimezone(UTC)
    except OverflowError as e:  # an offset that pushes year 1 or 9999 out of range
        raise ReadingRejected("malformed", f"timestamp {text!r} is out of range") from e


def parse_value(name: str, raw: object) -> float:
    """A number, or NaN for an empty/null value (NaN is rejected later, and counted)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return math.nan
    if isinstance(raw, bool):
        raise ReadingRejected("malformed", f"{name}={raw!r} is not a number")
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as e:
        raise ReadingRejected("malformed", f"{name}={raw!r} is not a number") from e


def parse_condition(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ReadingRejected("malformed", f"condition={raw!r} is not text")
    text = raw.strip().lower()
    return text or None


def parse_reading(ts: object, raw_values: Iterable[object], condition: object) -> StationReading:
    """Values (in ``READING_FIELDS`` order) are parsed before the time, so every source
    reports the same fault first for the same bad reading."""
    values = tuple(
        parse_value(name, raw) for name, raw in zip(READING_FIELDS, raw_values, strict=True)
    )
    return StationReading(parse_timestamp(ts), values, parse_condition(condition))


def reading_from_mapping(data: Mapping[str, object]) -> StationReading:
    """From a JSON object with ``ts``, every ``READING_FIELDS`` key and optional ``condition``."""
    missing = [k for k in ("ts", *READING_FIELDS) if k not in data]
    if missing:
        raise ReadingRejected("malformed", f"reading lacks {', '.join(missing)}")
    return parse_reading(data["ts"], (data[name] for name in READING_FIELDS), data.get("condition"))


@dataclass
class ReadingValidator:
    """Rejects NaN, out-of-range, stale, future, out-of-order and duplicate readings.

    ``max_age_s``/``max_future_s`` compare with the wall clock and are for live sources; a
    replay leaves them None and only its own time order is checked.
    """

    counters: collections.Counter[str]
    max_age_s: float | None = None
    max_future_s: float | None = None
    last_ts: datetime | None = None

    def check(self, reading: StationReading, now: datetime | None = None) -> None:
        """Raise ReadingRejected, or return; ``last_ts`` is the caller's to advance."""
        nan = [n for n, v in zip(READING_FIELDS, reading.values, strict=True) if math.isnan(v)]
        if nan:
            raise ReadingRejected("rejected_nan", f"{reading.ts.isoformat()}: no value for {nan}")
        for name, value in zip(READING_FIELDS, reading.values, strict=True):
            low, high = VALID_RANGES[name]
            if not low <= value <= high:
                self.counters[f"out_of_range:{name}"] += 1
                raise ReadingRejected(
                    "out_of_range",
                    f"{reading.ts.isoformat()}: {name}={value:g} outside [{low:g}, {high:g}]",
                )
        age = None if now is None else (now - reading.ts).total_seconds()
        if age is not None and self.max_age_s is not None and age > self.max_age_s:
            raise ReadingRejected(
                "stale", f"{reading.ts.isoformat()} is older than {self.max_age_s:g}s"
            )
        if age is not None and self.max_future_s is not None and -age > self.max_future_s:
            raise ReadingRejected("future", f"{reading.ts.isoformat()} is in the future")
        if self.last_ts is not None:
            if reading.ts == self.last_ts:
                raise ReadingRejected("duplicate", f"{reading.ts.isoformat()} seen already")
            if reading.ts < self.last_ts:
                raise ReadingRejected(
                    "out_of_order",
                    f"{reading.ts.isoformat()} is before {self.last_ts.isoformat()}",
                )


def _floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class _Bucket:
    hour: datetime
    sums: list[float]
    sin: float = 0.0
    cos: float = 0.0
    n: int = 0
    conditions: list[str] = field(default_factory=list)


class StationPipeline:
    """Readings in, model samples out: validate → hourly aggregate → feature row.

    An hour closes when a reading of a later hour arrives, or (live sources) when the clock
    passes its end by ``close_after_s``. Wind bearing is averaged on the circle; the
    condition of the hour is the most frequent one reported.
    """

    def __init__(
        self,
        counters: collections.Counter[str],
        *,
        max_age_s: float | None = None,
        max_future_s: float | None = None,
        builder: WeatherFeatureBuilder | None = None,
    ) -> None:
        self.counters = counters
        self.validator = ReadingValidator(counters, max_age_s, max_future_s)
        self.builder = builder or WeatherFeatureBuilder()
        self._bucket: _Bucket | None = None
        self._closed_through: datetime | None = None
        self._bearing = READING_FIELDS.index("wind_bearing_deg")
        self.last_rejection: str | None = None

    def offer(self, reading: StationReading, now: datetime | None = None) -> list[Sample]:
        """Validate and aggregate one reading; the samples of any hour it closed."""
        hour = _floor_hour(reading.ts)
        try:
            self.validator.check(reading, now)
            if self._closed_through is not None and hour <= self._closed_through:
                raise ReadingRejected(
                    "late", f"{reading.ts.isoformat()}: its hour was already closed"
                )
        except ReadingRejected as e:
            self.reject(e)
            return []
        self.validator.last_ts = reading.ts
        self.counters["readings"] += 1
        out: list[Sample] = []
        if self._bucket is not None and hour > self._bucket.hour:
            out.extend(self.close_hour())
        if self._bucket is None:
            self._bucket = _Bucket(hour, [0.0] * len(READING_FIELDS))
        bucket = self._bucket
        for i, value in enumerate(reading.values):
            bucket.sums[i] += value
        angle = math.radians(reading.values[self._bearing])
        bucket.sin += math.sin(angle)
        bucket.cos += math.cos(angle)
        bucket.n += 1
        if reading.condition is not None:
            bucket.conditions.append(reading.condition)
        return out

    def reject(self, error: ReadingRejected) -> None:
        self.counters[error.reason] += 1
        self.last_rejection = str(error)

    def close_due(self, now: datetime, close_after_s: float) -> list[Sample]:
        """Close the open hour once the clock is ``close_after_s`` past its end."""
        if self._bucket is None:
            return []
        if (now - (self._bucket.hour + HOUR)).total_seconds() < close_after_s:
            return []
        return self.close_hour()

    def close_hour(self) -> list[Sample]:
        bucket, self._bucket = self._bucket, None
        if bucket is None or bucket.n == 0:
            return []
        self._closed_through = bucket.hour
        means = [s / bucket.n for s in bucket.sums]
        means[self._bearing] = math.degrees(math.atan2(bucket.sin, bucket.cos)) % 360.0
        condition = (
            collections.Counter(bucket.conditions).most_common(1)[0][0]
            if bucket.conditions
            else None
        )
        m = dict(zip(READING_FIELDS, means, strict=True))
        hourly = HourlyReading(
            ts=bucket.hour,
            temperature_c=m["temperature_c"],
            apparent_temperature_c=m["apparent_temperature_c"],
            humidity=m["humidity"],
            wind_speed_kmph=m["wind_speed_kmph"],
            wind_bearing_deg=m["wind_bearing_deg"],
            visibility_km=m["visibility_km"],
            pressure_mb=m["pressure_mb"],
            condition=condition,
        )
        try:
            features = self.builder.push(hourly)
        except ReadingOrderError as e:
            self.reject(ReadingRejected("out_of_order", str(e)))
            return []
        self.counters["hours"] += 1
        if features is None:
            self.counters["warming_up"] += 1
            return []
        self.counters["samples"] += 1
        return [
            Sample(
                ts=bucket.hour,
                input_id=bucket.hour.strftime("%Y-%m-%dT%H:%MZ"),
                features=features,
                observed_label=condition,
            )
        ]
