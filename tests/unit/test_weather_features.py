"""The weather feature builder: streaming on a device equals the vectorised training path."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.features.weather import (
    CONDITIONS,
    FEATURE_NAMES,
    MIN_HISTORY_HOURS,
    READING_FIELDS,
    HourlyReading,
    ReadingOrderError,
    WeatherFeatureBuilder,
    compute_features,
    condition_code,
    feature_vector,
    is_plausible,
)

START = datetime(2015, 3, 1, tzinfo=UTC)


def synthetic_hours(
    n: int, seed: int = 7, defects: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    hours = np.datetime64("2015-03-01T00", "h") + np.arange(n)
    t = np.arange(n)
    readings = {
        "temperature_c": 5 + 8 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n),
        "apparent_temperature_c": 3 + 8 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n),
        "humidity": rng.uniform(0.3, 1.0, n),
        "wind_speed_kmph": rng.uniform(0, 30, n),
        "wind_bearing_deg": rng.uniform(0, 359, n),
        "visibility_km": rng.uniform(1, 16, n),
        "pressure_mb": rng.normal(1013, 8, n),
    }
    codes = rng.integers(0, 3, n).astype(np.float64)
    if not defects:
        return hours, readings, codes
    # Defects: sensor faults (zeros), NaN readings, missing conditions, a lost block of hours.
    readings["pressure_mb"][rng.choice(n, 25, replace=False)] = 0.0
    readings["humidity"][rng.choice(n, 10, replace=False)] = 0.0
    readings["temperature_c"][rng.choice(n, 10, replace=False)] = np.nan
    codes[rng.choice(n, 15, replace=False)] = np.nan
    for name in READING_FIELDS:
        readings[name][100:105] = np.nan  # five lost hours
        readings[name][200:220] = np.nan  # a long outage
    codes[100:105] = np.nan
    codes[200:220] = np.nan
    return hours, readings, codes


def reading_at(hours, readings, codes, i: int) -> HourlyReading:
    ts = datetime.fromisoformat(str(hours[i].astype("datetime64[s]"))).replace(tzinfo=UTC)
    code = codes[i]
    return HourlyReading(
        ts=ts,
        condition=None if math.isnan(code) else CONDITIONS[int(code)],
        **{name: float(readings[name][i]) for name in READING_FIELDS},
    )


def test_streaming_equals_vectorised_with_gaps_and_faults() -> None:
    hours, readings, codes = synthetic_hours(400, defects=True)
    matrix, valid = compute_features(hours, readings, codes)
    builder = WeatherFeatureBuilder()
    lost = set(range(100, 105)) | set(range(200, 220))
    streamed = 0
    for i in range(hours.size):
        if i in lost:
            continue  # the station never sent these hours: the builder sees a gap in time
        row = builder.push(reading_at(hours, readings, codes, i))
        assert (row is not None) == bool(valid[i]), f"hour {i}"
        if row is not None:
            streamed += 1
            np.testing.assert_array_equal(feature_vector(row)[0], matrix[i].astype(np.float32))
            assert list(row) == list(FEATURE_NAMES)
    assert streamed > 300
    # Missing hours are carried over for three hours; a long outage leaves rows without
    # enough history until six fresh hours have arrived.
    assert valid[100:103].all() and not valid[103:105].any()
    assert not valid[203:226].any()


def test_none_until_enough_history() -> None:
    hours, readings, codes = synthetic_hours(20, seed=1)
    for name in READING_FIELDS:
        readings[name] = np.nan_to_num(readings[name], nan=1.0)
    readings["pressure_mb"][:] = 1010.0
    readings["humidity"][:] = 0.5
    codes[:] = 0.0
    builder = WeatherFeatureBuilder()
    rows = [builder.push(reading_at(hours, readings, codes, i)) for i in range(10)]
    assert rows[:6] == [None] * 6
    assert all(r is not None for r in rows[6:])


def test_sensor_fault_is_carried_over_not_used() -> None:
    hours, readings, codes = synthetic_hours(30, seed=2)
    for name in READING_FIELDS:
        readings[name] = np.full(30, {"humidity": 0.8, "pressure_mb": 1000.0}.get(name, 5.0))
    codes[:] = 0.0
    readings["pressure_mb"][20] = 0.0  # a fault, not a pressure drop of 1000 mb
    matrix, valid = compute_features(hours, readings, codes)
    col = FEATURE_NAMES.index("pressure_mb")
    assert valid[20]
    assert matrix[20, col] == 1000.0
    assert matrix[20, FEATURE_NAMES.index("pressure_delta_3h")] == 0.0


def test_cyclic_time_features() -> None:
    hours, readings, codes = synthetic_hours(30, seed=3)
    matrix, valid = compute_features(hours, readings, codes)
    i = int(np.flatnonzero(valid)[0])
    hour = int((hours[i] - hours[i].astype("datetime64[D]")).astype(int))
    assert matrix[i, FEATURE_NAMES.index("hour_sin")] == pytest.approx(
        np.sin(2 * np.pi * hour / 24)
    )
    norms = matrix[valid, FEATURE_NAMES.index("doy_sin")] ** 2 + (
        matrix[valid, FEATURE_NAMES.index("doy_cos")] ** 2
    )
    np.testing.assert_allclose(norms, 1.0)


def test_plausibility_and_conditions() -> None:
    assert not is_plausible("pressure_mb", 0.0)
    assert is_plausible("pressure_mb", 1013.2)
    assert not is_plausible("humidity", 0.0)
    assert not is_plausible("temperature_c", float("nan"))
    assert is_plausible("temperature_c", 0.0)
    assert condition_code(" Rain ") == 0.0
    assert math.isnan(condition_code("fog"))
    assert math.isnan(condition_code(None))


def test_out_of_order_and_naive_timestamps_are_refused() -> None:
    hours, readings, codes = synthetic_hours(5, seed=4)
    builder = WeatherFeatureBuilder()
    builder.push(reading_at(hours, readings, codes, 3))
    with pytest.raises(ReadingOrderError):
        builder.push(reading_at(hours, readings, codes, 2))
    naive = reading_at(hours, readings, codes, 4)
    with pytest.raises(ValueError, match="no time zone"):
        builder.push(HourlyReading(**{**naive.__dict__, "ts": naive.ts.replace(tzinfo=None)}))
    with pytest.raises(ValueError, match="not on the hour"):
        builder.push(HourlyReading(**{**naive.__dict__, "ts": naive.ts + timedelta(minutes=5)}))
    with pytest.raises(ValueError, match="at least"):
        WeatherFeatureBuilder(history_hours=MIN_HISTORY_HOURS - 1)


def test_vectorised_refuses_non_consecutive_hours() -> None:
    hours, readings, codes = synthetic_hours(5, seed=5)
    with pytest.raises(ValueError, match="consecutive"):
        compute_features(hours[[0, 1, 3]], {k: v[:3] for k, v in readings.items()}, codes[:3])


@settings(max_examples=25, deadline=None)
@given(
    lost=st.lists(st.integers(0, 79), max_size=30, unique=True),
    faults=st.lists(st.tuples(st.sampled_from(READING_FIELDS), st.integers(0, 79)), max_size=20),
    seed=st.integers(0, 1000),
)
def test_streaming_equals_vectorised_for_any_gaps(lost, faults, seed) -> None:
    hours, readings, codes = synthetic_hours(80, seed=seed)
    for name, i in faults:
        readings[name][i] = 0.0 if name in ("pressure_mb", "humidity") else np.nan
    for i in lost:
        for name in READING_FIELDS:
            readings[name][i] = np.nan
        codes[i] = np.nan
    matrix, valid = compute_features(hours, readings, codes)
    builder = WeatherFeatureBuilder()
    for i in range(hours.size):
        if i in lost:
            continue
        row = builder.push(reading_at(hours, readings, codes, i))
        assert (row is not None) == bool(valid[i])
        if row is not None:
            np.testing.assert_array_equal(feature_vector(row)[0], matrix[i].astype(np.float32))
