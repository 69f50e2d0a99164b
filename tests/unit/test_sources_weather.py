"""Weather sources: a real station CSV slice replayed with its defects, a serial line on a pty."""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.features.weather import CONDITIONS, FEATURE_NAMES, MAX_LAG_HOURS, MIN_HISTORY_HOURS
from edge_agent.sources import (
    CsvReplaySourceConfig,
    Sample,
    SerialSourceConfig,
    Source,
    SourceClosed,
    SourceError,
    open_source,
)
from edge_agent.sources.station import ReadingRejected, StationPipeline, StationReading
from tests.support.media import station_rows, write_station_csv


def drain(source: Source, limit: int = 10_000) -> list[Sample]:
    out: list[Sample] = []
    for _ in range(limit):
        try:
            sample = source.read(2.0)
        except SourceClosed:
            return out
        if sample is not None:
            out.append(sample)
    raise AssertionError(f"source still open after {limit} reads")


def replay(path: Path, **kw: object) -> Source:
    return open_source(
        CsvReplaySourceConfig.model_validate({"type": "csv_replay", "path": str(path), **kw})
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def assert_hourly_samples(samples: list[Sample]) -> None:
    for s in samples:
        assert s.features is not None and list(s.features) == list(FEATURE_NAMES)
        assert all(math.isfinite(v) for v in s.features.values())
        assert s.observed_label is None or s.observed_label in CONDITIONS
        assert s.ts.minute == 0 and s.ts.utcoffset() == timedelta(0)
        assert s.input_id == s.ts.strftime("%Y-%m-%dT%H:%MZ")
    assert all(b.ts > a.ts for a, b in itertools.pairwise(samples))


def test_replay_of_real_rows_counts_every_defect(tmp_path: Path, shared_data: Path) -> None:
    rows = station_rows(shared_data, 0, 48)
    nan_hour, zero_hour = utc(rows[20]["Timestamp"]), utc(rows[25]["Timestamp"])
    rows[20] = {**rows[20], "Humidity": ""}
    rows[25] = {**rows[25], "Pressure_millibars": "0"}
    rows.insert(31, dict(rows[30]))  # a duplicated timestamp
    rows.insert(41, dict(rows[12]))  # a row far out of order
    rows.insert(44, {**rows[43], "Temperature_C": "warm"})  # not a number
    source = replay(write_station_csv(tmp_path / "station.csv", rows), order="file")
    samples = drain(source)
    c = source.counters
    assert (c["rejected_nan"], c["out_of_range"], c["duplicate"]) == (1, 1, 1)
    assert (c["out_of_order"], c["malformed"]) == (1, 1)
    assert c["out_of_range:pressure_mb"] == 1
    assert c["readings"] == 46 and c["hours"] == 46
    assert c["samples"] == len(samples) == 46 - c["warming_up"]
    assert c["warming_up"] >= MAX_LAG_HOURS
    assert_hourly_samples(samples)
    stamps = {s.ts for s in samples}
    assert nan_hour not in stamps and zero_hour not in stamps  # never fed to the model
    # One lost hour is bridged by the feature builder: the next hour still has features.
    assert nan_hour + timedelta(hours=1) in stamps


def test_time_order_sorts_a_shuffled_export(tmp_path: Path, shared_data: Path) -> None:
    rows = station_rows(shared_data, 100, 30)
    shuffled = rows[15:] + rows[:15]  # written in two blocks, the later one first
    path = write_station_csv(tmp_path / "blocks.csv.gz", shuffled, gz=True)
    samples = drain(replay(path))  # order: time is the default
    assert len(samples) == 30 - (MAX_LAG_HOURS)
    assert samples[-1].ts == utc(rows[-1]["Timestamp"])
    as_file = replay(path, order="file")
    drain(as_file)
    assert as_file.counters["out_of_order"] == 15


def test_replay_paced_by_speed(tmp_path: Path, shared_data: Path) -> None:
    rows = station_rows(shared_data, 0, 12)
    path = write_station_csv(tmp_path / "s.csv", rows)
    start = time.monotonic()
    samples = drain(replay(path, speed=36_000.0))  # an hour every 0.1 s
    assert time.monotonic() - start >= 1.0  # 11 hours of data take 1.1 s
    assert len(samples) == 12 - (MAX_LAG_HOURS)
    source = replay(path, speed=3600.0)  # an hour a second: nothing yet within 0.2 s
    assert source.read(0.2) is None


def test_broken_files_are_refused_by_name(tmp_path: Path) -> None:
    empty = replay(write_station_csv(tmp_path / "header_only.csv", []))
    with pytest.raises(SourceClosed):
        empty.read(0.1)
    bad = tmp_path / "bad.csv"
    bad.write_text("Timestamp,Temperature_C\n2015-01-01 00:00:00+00:00,1\n")
    with pytest.raises(SourceError, match=r"bad\.csv: missing column\(s\) Apparent_Temp"):
        replay(bad)
    with pytest.raises(SourceError, match=r"nothing\.csv"):
        replay(tmp_path / "nothing.csv")


def reading(ts: datetime, temp: float = 10.0, bearing: float = 90.0) -> StationReading:
    return StationReading(ts, (temp, temp - 1, 0.8, 10.0, bearing, 10.0, 1013.0), "rain")


def test_hourly_aggregation_means_and_circular_bearing() -> None:
    pipe = StationPipeline(counters=collections.Counter())
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[Sample] = []
    for h in range(MIN_HISTORY_HOURS + 1):
        hour = t0 + timedelta(hours=h)
        out += pipe.offer(reading(hour, temp=10.0, bearing=350.0))
        out += pipe.offer(reading(hour + timedelta(minutes=30), temp=12.0, bearing=10.0))
    assert len(out) == MIN_HISTORY_HOURS - MAX_LAG_HOURS  # the last hour is still open
    assert pipe.counters["readings"] == 2 * (MIN_HISTORY_HOURS + 1)
    features = out[-1].features
    assert features is not None
    assert features["temperature_c"] == pytest.approx(11.0)
    assert features["wind_bearing_cos"] == pytest.approx(1.0)  # 350° and 10° average to north
    assert features["wind_bearing_sin"] == pytest.approx(0.0, abs=1e-9)
    late = pipe.offer(reading(t0 + timedelta(hours=MAX_LAG_HOURS, minutes=59)))
    assert late == [] and pipe.counters["out_of_order"] == 1


def test_live_validation_rejects_stale_and_future() -> None:
    counters: collections.Counter[str] = collections.Counter()
    pipe = StationPipeline(counters, max_age_s=600, max_future_s=60)
    now = datetime.now(UTC)
    pipe.offer(reading(now - timedelta(hours=2)), now)
    pipe.offer(reading(now + timedelta(minutes=10)), now)
    pipe.offer(reading(now), now)
    assert (counters["stale"], counters["future"], counters["readings"]) == (1, 1, 1)
    with pytest.raises(ReadingRejected):
        pipe.validator.check(reading(now), now)  # the same timestamp again: a duplicate


def test_serial_line_over_a_pty(tmp_path: Path) -> None:
    master, slave = os.openpty()
    device = os.ttyname(slave)
    config = SerialSourceConfig(
        type="serial",
        device=Path(device),
        baud=115200,
        max_age_s=3 * 86400,
        close_after_s=86400,
        reconnect_min_s=0.05,
    )
    source = open_source(config)
    try:
        assert source.read(0.05) is None  # opens the line, nothing sent yet
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        t0 = now - timedelta(hours=30)
        lines = ["# station SN-1 boot", ""]
        for h in range(14):
            for minute, temp in ((0, 4.0), (30, 6.0)):
                ts = (t0 + timedelta(hours=h, minutes=minute)).isoformat().replace("+00:00", "Z")
                lines.append(f"{ts},{temp},{temp - 2},0.9,12.0,200,8.5,1004.2,rain")
        bad_ts = (t0 + timedelta(hours=5, minutes=45)).isoformat()
        lines.insert(14, f"{bad_ts},5.0,,0.9,12.0,200,8.5,1004.2,rain")  # NaN apparent
        lines.insert(15, "2026-01-01T00:00:00Z,5.0,3.0")  # too few fields
        lines.insert(16, "x" * 600)  # runaway line
        lines.insert(17, (now - timedelta(days=5)).isoformat() + ",5,3,0.9,12,200,8.5,1004,rain")
        payload = ("\r\n".join(lines) + "\r\n").encode() + b"\xff\xfe,broken\n"
        for i in range(0, len(payload), 97):  # arrives in odd chunks, as on a real line
            os.write(master, payload[i : i + 97])
        samples: list[Sample] = []
        deadline = time.monotonic() + 10
        while len(samples) < 13 - MAX_LAG_HOURS and time.monotonic() < deadline:
            if (s := source.read(0.5)) is not None:
                samples.append(s)
        c = source.counters
        # The hourly samples can all be out before the line's last readings are consumed.
        while c["readings"] + c["malformed"] < 28 + 3 and time.monotonic() < deadline:
            if (s := source.read(0.2)) is not None:
                samples.append(s)
        assert len(samples) == 13 - MAX_LAG_HOURS  # the 14th hour is still open
        assert c["readings"] == 28
        assert (c["rejected_nan"], c["malformed"], c["stale"]) == (1, 3, 1)
        assert samples[0].features is not None
        assert samples[0].features["temperature_c"] == pytest.approx(5.0)  # mean of 4 and 6
        assert samples[0].observed_label == "rain"
        os.close(master)  # the station is unplugged
        assert source.read(0.5) is None
        assert c["line_drops"] == 1
        deadline = time.monotonic() + 2
        while c["reconnect_failures"] == 0 and time.monotonic() < deadline:
            source.read(0.1)
        assert c["reconnect_failures"] >= 1
    finally:
        source.close()
        os.close(slave)
        with contextlib.suppress(OSError):
            os.close(master)
