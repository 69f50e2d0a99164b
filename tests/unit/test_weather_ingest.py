"""Ingestion: each defect of a station history is repaired and counted, or refused clearly."""

from __future__ import annotations

import gzip
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.weather.ingest import WeatherDataError, load_station_history
from edge_agent.features.weather import CONDITIONS
from tests.support.weather_csv import HEADER, START, station_rows, write_csv


def test_clean_file_is_one_hourly_grid(tmp_path: Path) -> None:
    history, report = load_station_history(write_csv(tmp_path / "ok.csv", station_rows(START, 48)))
    assert len(history) == 48 and report.hours == 48
    assert np.all(np.diff(history.hours) == np.timedelta64(1, "h"))
    assert history.hours[0] == np.datetime64("2015-01-01T00", "h")
    assert report.utc_offsets == {"+01:00": 24, "+02:00": 24}
    assert report.missing_hours == report.backward_time_jumps == 0


def test_unsorted_rows_are_put_in_time_order(tmp_path: Path) -> None:
    rows = station_rows(START, 30)
    shuffled = rows[10:20] + rows[:10] + rows[20:]
    history, report = load_station_history(write_csv(tmp_path / "x.csv", shuffled))
    assert report.backward_time_jumps == 1
    temps = history.readings["temperature_c"]
    np.testing.assert_allclose(temps, [float(r["Temperature_C"]) for r in rows])


def test_mixed_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    rows = station_rows(START, 3)
    # The same instant written in two offsets is one hour, not two.
    rows[1]["Timestamp"] = (START + timedelta(hours=1)).astimezone().isoformat(sep=" ")
    history, _ = load_station_history(write_csv(tmp_path / "x.csv", rows))
    assert list(history.hours.astype(str)) == ["2015-01-01T00", "2015-01-01T01", "2015-01-01T02"]


def test_duplicates_identical_and_conflicting_are_counted(tmp_path: Path) -> None:
    rows = station_rows(START, 10)
    conflicting = {**rows[4], "Temperature_C": "30.0"}
    history, report = load_station_history(
        write_csv(tmp_path / "x.csv", [*rows, rows[2], rows[3], conflicting])
    )
    assert len(history) == 10
    assert report.duplicate_hours_identical == 2
    assert report.duplicate_hours_conflicting == 1
    assert history.readings["temperature_c"][4] == pytest.approx(float(rows[4]["Temperature_C"]))


def test_missing_hours_become_gaps(tmp_path: Path) -> None:
    rows = station_rows(START, 24)
    del rows[5:8]
    history, report = load_station_history(write_csv(tmp_path / "x.csv", rows))
    assert len(history) == 24 and report.missing_hours == 3
    assert np.isnan(history.readings["pressure_mb"][5:8]).all()
    assert np.isnan(history.conditions[5:8]).all()


def test_sensor_faults_become_missing(tmp_path: Path) -> None:
    rows = station_rows(START, 12)
    rows[1]["Pressure_millibars"] = "0"
    rows[2]["Humidity"] = "0"
    rows[3]["Visibility_km"] = "0"
    rows[4]["Temperature_C"] = "0"  # zero degrees is weather, not a fault
    rows[5]["Wind_speed_kmph"] = "fast"
    history, report = load_station_history(write_csv(tmp_path / "x.csv", rows))
    assert report.implausible_values == {"pressure_mb": 1, "humidity": 1, "visibility_km": 1}
    assert report.non_numeric_values == {"wind_speed_kmph": 1}
    assert np.isnan(history.readings["pressure_mb"][1])
    assert history.readings["temperature_c"][4] == 0.0
    assert report.missing_after_cleaning["wind_speed_kmph"] == 1


def test_conditions_missing_unknown_and_untidy(tmp_path: Path) -> None:
    rows = station_rows(START, 6)
    rows[0]["Weather_conditions"] = ""
    rows[1]["Weather_conditions"] = "fog"
    rows[2]["Weather_conditions"] = " Rain "
    history, report = load_station_history(write_csv(tmp_path / "x.csv", rows))
    assert report.missing_conditions == 1 and report.unknown_conditions == {"fog": 1}
    assert np.isnan(history.conditions[:2]).all()
    assert history.conditions[2] == CONDITIONS.index("rain")


def test_bad_timestamps_dropped_and_naive_assumed_utc(tmp_path: Path) -> None:
    rows = station_rows(START, 10)
    rows[3]["Timestamp"] = "yesterday"
    rows[4]["Timestamp"] = "2015-01-01 04:00:00"
    rows[5]["Timestamp"] = "2015-01-01 05:30:00+00:00"
    far_future = {**rows[6], "Timestamp": "2815-01-01 06:00:00+01:00"}
    long_ago = {**rows[6], "Timestamp": "1015-01-01 06:00:00+01:00"}
    history, report = load_station_history(
        write_csv(tmp_path / "x.csv.gz", [*rows, far_future, long_ago])
    )
    assert report.unparsable_timestamps == 1 and report.naive_timestamps_assumed_utc == 2
    assert report.implausible_timestamps == 2 and len(history) == 10
    assert report.off_hour_timestamps == 1
    assert report.missing_hours == 1  # hour 3 lost with its unparsable timestamp
    assert not np.isnan(history.readings["temperature_c"][4])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "missing column"),
        (",".join(HEADER) + "\n", "no data rows"),
        ("", "not a readable CSV"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(WeatherDataError, match=message):
        load_station_history(path)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header = [h for h in HEADER if h not in ("Humidity", "Pressure_millibars")]
    path = write_csv(tmp_path / "x.csv", station_rows(START, 5), header)
    with pytest.raises(WeatherDataError, match="Humidity, Pressure_millibars"):
        load_station_history(path)


def test_mostly_unparsable_timestamps_are_a_schema_error(tmp_path: Path) -> None:
    rows = station_rows(START, 6)
    for row in rows[:4]:
        row["Timestamp"] = "01/02/2015 3pm"
    with pytest.raises(WeatherDataError, match="4 of 6 timestamps cannot be parsed"):
        load_station_history(write_csv(tmp_path / "x.csv", rows))


def test_truncated_gzip_and_missing_file(tmp_path: Path) -> None:
    full = gzip.compress(b"x" * 10 + ",".join(HEADER).encode() * 500)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(WeatherDataError, match=str(path.name)):
        load_station_history(path)
    with pytest.raises(WeatherDataError, match="no such file"):
        load_station_history(tmp_path / "absent.csv")
