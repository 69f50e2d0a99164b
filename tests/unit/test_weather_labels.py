"""Labels live on the time axis: the condition at t + 4 h, never a shift of unsorted rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.weather.dataset import (
    HORIZON_HOURS,
    apply_split,
    data_version,
    labelled_rows,
    rain_ahead,
    time_split,
)
from cloud_trainer.weather.ingest import WeatherDataError, load_station_history
from edge_agent.features.weather import FEATURE_NAMES
from tests.support.weather_csv import START, station_rows, write_csv


def conditions_pattern(n: int) -> list[str]:
    rng = np.random.default_rng(11)
    return [str(c) for c in rng.choice(["rain", "snow", "clear"], n, p=[0.6, 0.3, 0.1])]


def test_label_is_the_condition_four_hours_later(tmp_path: Path) -> None:
    conditions = conditions_pattern(40)
    rows = station_rows(START, 40, conditions)
    history, _ = load_station_history(write_csv(tmp_path / "x.csv", rows))
    label = rain_ahead(history)
    for i in range(40 - HORIZON_HOURS):
        assert label[i] == float(conditions[i + HORIZON_HOURS] == "rain"), i
    assert np.isnan(label[-HORIZON_HOURS:]).all()


def test_unsorted_rows_do_not_reproduce_the_row_shift_bug(tmp_path: Path) -> None:
    conditions = conditions_pattern(60)
    rows = station_rows(START, 60, conditions)
    rng = np.random.default_rng(3)
    shuffled = [rows[i] for i in rng.permutation(60)]
    history, _ = load_station_history(write_csv(tmp_path / "x.csv", shuffled))
    label = rain_ahead(history)
    expected = [float(conditions[i + 4] == "rain") for i in range(56)]
    np.testing.assert_array_equal(label[:56], expected)
    # The book's way: shift the file's rows by +4, i.e. the condition 4 rows *earlier* in file
    # order, which on unsorted rows is some unrelated hour. It disagrees with the truth.
    book = {
        r["Timestamp"]: float(shuffled[j - 4]["Weather_conditions"] == "rain")
        for j, r in enumerate(shuffled)
        if j >= 4
    }
    by_time = {r["Timestamp"]: i for i, r in enumerate(rows)}
    disagreements = sum(book[ts] != label[by_time[ts]] for ts in book if by_time[ts] < 56)
    assert disagreements > 10


def test_missing_future_observation_drops_the_row(tmp_path: Path) -> None:
    conditions = conditions_pattern(40)
    rows = station_rows(START, 40, conditions)
    rows[20]["Weather_conditions"] = ""  # label of hour 16 unknown
    del rows[30]  # hour 30 lost: label of hour 26 unknown
    history, _ = load_station_history(write_csv(tmp_path / "x.csv", rows))
    labelled = labelled_rows(history)
    kept = set(labelled.hours.astype(str))
    assert "2015-01-01T16" not in kept and "2015-01-02T02" not in kept
    assert "2015-01-01T15" in kept
    assert labelled.dropped_no_label == 2 + HORIZON_HOURS
    # Persistence is "rain now" as the model sees it (the condition feature).
    col = FEATURE_NAMES.index("cond_rain")
    np.testing.assert_array_equal(labelled.persistence, labelled.x[:, col].astype(np.int64))


def test_calendar_split_keeps_the_last_year_for_test(tmp_path: Path) -> None:
    hours = np.datetime64("2011-01-01T00", "h") + np.arange(5 * 365 * 24)
    bounds = time_split(hours)
    test_start = np.datetime64(bounds.test_start, "h")
    assert hours.max() - test_start == np.timedelta64(365 * 24 - 1, "h")
    assert test_start - np.datetime64(bounds.validation_start, "h") == np.timedelta64(365 * 24, "h")


def test_long_span_with_a_long_outage_falls_back_to_shares() -> None:
    early = np.datetime64("2006-01-01T00", "h") + np.arange(200 * 24)
    late = np.datetime64("2010-06-01T00", "h") + np.arange(60 * 24)
    bounds = time_split(np.concatenate([early, late]))
    assert bounds.rule.startswith("short history")
    assert np.datetime64(bounds.test_start, "h") > late[0]


def test_short_history_split_by_share_and_parts_are_disjoint(tmp_path: Path) -> None:
    rows = station_rows(START, 24 * 20, conditions_pattern(24 * 20))
    history, _ = load_station_history(write_csv(tmp_path / "x.csv", rows))
    labelled = labelled_rows(history)
    bounds = time_split(labelled.hours)
    assert bounds.rule.startswith("short history")
    split = apply_split(labelled, bounds)
    assert split.train.hours.max() < split.validation.hours.min()
    assert split.validation.hours.max() < split.test.hours.min()
    assert len(split.train) + len(split.validation) + len(split.test) == len(labelled)
    assert len(split.test) == pytest.approx(0.15 * len(labelled), abs=2)


def test_data_version_tracks_content_and_boundaries(tmp_path: Path) -> None:
    rows = station_rows(START, 24 * 10, conditions_pattern(24 * 10))
    history, _ = load_station_history(write_csv(tmp_path / "a.csv", rows))
    bounds = time_split(labelled_rows(history).hours)
    same, _ = load_station_history(write_csv(tmp_path / "b.csv", list(reversed(rows))))
    assert data_version(history, bounds) == data_version(same, bounds)
    rows[7]["Pressure_millibars"] = "999.5"
    changed, _ = load_station_history(write_csv(tmp_path / "c.csv", rows))
    assert data_version(changed, bounds) != data_version(history, bounds)
    moved = bounds.model_copy(update={"test_start": str(START + timedelta(days=9))})
    assert data_version(history, moved) != data_version(history, bounds)


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    rows = station_rows(START, 15, conditions_pattern(15))
    history, _ = load_station_history(write_csv(tmp_path / "x.csv", rows))
    with pytest.raises(WeatherDataError, match="too few"):
        time_split(labelled_rows(history).hours)
