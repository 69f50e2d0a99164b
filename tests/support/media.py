"""Real media for source tests: AVI videos written with cv2.VideoWriter, station CSV slices.

- ``pet_frames(shared_data, count, size)``: BGR frames from the photos in ``pets/`` (files
  OpenCV cannot read, like the GIF named ``.jpg``, are skipped), or generated scenes when
  the shared data is absent.
- ``write_video(path, frames, fps)``: an MJPG AVI (one JPEG per frame, so single frames can
  be corrupted on purpose with ``corrupt_video_frames``).
- ``moving_frames`` / ``still_frames``: generated scenes for the motion gate.
- ``station_rows(shared_data, start, count)``: rows of the raw station CSV (a real slice,
  or synthetic rows in the same schema when the data is absent); ``write_station_csv``
  writes them in that raw format, optionally gzipped.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from tests.support.weather_csv import HEADER

FOURCC = "MJPG"


def generated_frames(count: int, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """Distinct scenes (a bright square on a coloured ground) for when no photos exist."""
    w, h = size
    frames = []
    for i in range(count):
        frame = np.full((h, w, 3), (40 + 7 * i % 200, 90, 160 - 5 * i % 150), np.uint8)
        x = (i * 13) % (w - 30)
        cv2.rectangle(frame, (x, h // 3), (x + 30, h // 3 + 30), (250, 250, 250), -1)
        frames.append(frame)
    return frames


def pet_frames(
    shared_data: Path | None, count: int, size: tuple[int, int] = (160, 120)
) -> list[np.ndarray]:
    pets = shared_data / "pets" if shared_data is not None else None
    if pets is None or not pets.is_dir():
        return generated_frames(count, size)
    frames: list[np.ndarray] = []
    cats = sorted((pets / "cat").glob("*"))
    dogs = sorted((pets / "dog").glob("*"))
    for path in (p for pair in zip(cats, dogs, strict=False) for p in pair):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        frames.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        if len(frames) == count:
            return frames
    return frames + generated_frames(count - len(frames), size)


def still_frames(count: int, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    frame = generated_frames(1, size)[0]
    return [frame.copy() for _ in range(count)]


def moving_frames(count: int, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """A dark square crossing a fixed ground by 12 px a frame: clear motion every frame."""
    w, h = size
    out = []
    for i in range(count):
        frame = np.full((h, w, 3), 200, np.uint8)
        x = (i * 12) % (w - 40)
        cv2.rectangle(frame, (x, 20), (x + 40, 80), (10, 10, 10), -1)
        out.append(frame)
    return out


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with {FOURCC}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def corrupt_video_frames(path: Path, indices: Sequence[int]) -> None:
    """Wipe the JPEG data of the frames at ``indices`` so they cannot be decoded."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    for k in indices:
        s = starts[k]
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        data[s : s + min(600, end - s - 8)] = bytes(min(600, end - s - 8))
    path.write_bytes(bytes(data))


def _synthetic_rows(start: int, count: int) -> list[dict[str, str]]:
    t0 = datetime(2015, 6, 1, tzinfo=UTC) + timedelta(hours=start)
    rows = []
    for i in range(count):
        ts = t0 + timedelta(hours=i)
        rows.append(
            {
                "S_No": str(start + i),
                "Timestamp": ts.strftime("%Y-%m-%d %H:%M:%S+00:00"),
                "Location": "Port of Turku, Finland",
                "Temperature_C": f"{15 + 5 * np.sin(i / 4):.3f}",
                "Apparent_Temperature_C": f"{14 + 5 * np.sin(i / 4):.3f}",
                "Humidity": f"{0.7 + 0.2 * np.cos(i / 6):.2f}",
                "Wind_speed_kmph": "11.5",
                "Wind_bearing_degrees": str(30 * i % 360),
                "Visibility_km": "10.0",
                "Pressure_millibars": f"{1012 + np.sin(i / 8):.2f}",
                "Weather_conditions": "rain" if i % 5 else "clear",
            }
        )
    return rows


def station_rows(shared_data: Path | None, start: int, count: int) -> list[dict[str, str]]:
    """``count`` consecutive rows of the raw file from row ``start`` (file order, defects kept)."""
    raw = shared_data / "weather" / "weather_dataset_raw.csv.gz" if shared_data else None
    if raw is None or not raw.is_file():
        return _synthetic_rows(start, count)
    rows = []
    with gzip.open(raw, "rt", encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= start:
                rows.append(row)
            if len(rows) == count:
                break
    return rows


def write_station_csv(path: Path, rows: Sequence[dict[str, str]], gz: bool = False) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(buf.getvalue().encode()))
    else:
        path.write_text(buf.getvalue(), encoding="utf-8")
    return path
