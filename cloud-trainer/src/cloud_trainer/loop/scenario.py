"""Time windows of a station history: what v1 was trained on, what the station now reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cloud_trainer.errors import UserError


def _read(history: Path) -> tuple[pd.DataFrame, pd.Series]:
    try:
        frame = pd.read_csv(history)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read station history {history}: {e}") from e
    if "Timestamp" not in frame.columns:
        raise UserError(f"{history} has no Timestamp column")
    # Mixed UTC offsets are normal here; unparsable stamps cannot be placed in a window.
    stamps = pd.to_datetime(frame["Timestamp"], utc=True, errors="coerce", format="mixed")
    return frame, stamps


def write_window(
    history: Path, dst: Path, since: datetime | None = None, until: datetime | None = None
) -> int:
    """Copy the raw rows with ``since <= ts < until`` to ``dst`` (same columns, defects kept)."""
    frame, stamps = _read(history)
    keep = stamps.notna()
    if since is not None:
        keep &= stamps >= pd.Timestamp(since)
    if until is not None:
        keep &= stamps < pd.Timestamp(until)
    dst.parent.mkdir(parents=True, exist_ok=True)
    frame[keep].to_csv(dst, index=False)
    return int(keep.sum())


@dataclass(frozen=True)
class WeatherScenario:
    """A station whose model (v1) was trained on winter months meets its first summer.

    With a multi-year history: v1 learns from one winter (October–March) three years before
    the last summer, the station replays June–August of the last year, and a retrain may use
    everything the archive holds up to the station's clock. With the few-month sample: v1
    learns January–March and the station replays June–August.
    """

    history: Path
    initial_since: datetime
    initial_until: datetime
    replay_since: datetime
    replay_until: datetime

    @classmethod
    def for_history(cls, history: Path) -> WeatherScenario:
        _frame, stamps = _read(history)
        stamps = stamps.dropna()
        if stamps.empty:
            raise UserError(f"{history} has no readable timestamps")
        last_year = int(stamps.max().year)
        if stamps.max().month < 9:
            last_year -= 0 if stamps.max().month >= 8 else 1
        first = stamps.min()
        multi_year = (stamps.max() - first).days > 3 * 365
        replay = (datetime(last_year, 6, 1, tzinfo=UTC), datetime(last_year, 9, 1, tzinfo=UTC))
        if multi_year:
            initial = (
                datetime(last_year - 3, 10, 1, tzinfo=UTC),
                datetime(last_year - 2, 4, 1, tzinfo=UTC),
            )
        else:
            initial = (first.to_pydatetime(), datetime(last_year, 4, 1, tzinfo=UTC))
        return cls(history, initial[0], initial[1], replay[0], replay[1])

    def initial_data(self, dst: Path) -> Path:
        if write_window(self.history, dst, self.initial_since, self.initial_until) < 500:
            raise UserError(f"too little history before {self.initial_until:%Y-%m-%d} for v1")
        return dst

    def station_replay(self, dst: Path) -> Path:
        if write_window(self.history, dst, self.replay_since, self.replay_until) < 200:
            raise UserError(f"too little history from {self.replay_since:%Y-%m-%d} to replay")
        return dst

    def archive_until(self, dst: Path, until: datetime) -> Path:
        """The cloud's archive of this station as of ``until`` (what a retrain may use)."""
        write_window(self.history, dst, None, until)
        return dst
