"""Small station CSVs in the ``weather_dataset_raw`` format, with defects put in on purpose."""

from __future__ import annotations

import csv
import gzip
import io
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

HEADER = [
    "S_No",
    "Timestamp",
    "Location",
    "Temperature_C",
    "Apparent_Temperature_C",
    "Humidity",
    "Wind_speed_kmph",
    "Wind_bearing_degrees",
    "Visibility_km",
    "Pressure_millibars",
    "Weather_conditions",
]
CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))


def station_rows(start: datetime, hours: int, conditions: list[str] | None = None) -> list[dict]:
    """Plausible consecutive hourly rows; local time alternates between +01:00 and +02:00."""
    rows = []
    for i in range(hours):
        ts = start + timedelta(hours=i)
        local = ts.astimezone(CEST if (i // 24) % 2 else CET)
        temp = 5 + 6 * math.sin(2 * math.pi * i / 24)
        rows.append(
            {
                "S_No": str(i),
                "Timestamp": local.isoformat(sep=" "),
                "Location": "Port of Turku, Finland",
                "Temperature_C": f"{temp:.3f}",
                "Apparent_Temperature_C": f"{temp - 2:.3f}",
                "Humidity": "0.8",
                "Wind_speed_kmph": "12.5",
                "Wind_bearing_degrees": str((i * 15) % 360),
                "Visibility_km": "10.0",
                "Pressure_millibars": f"{1010 + (i % 7):.1f}",
                "Weather_conditions": (
                    conditions[i] if conditions else ("rain", "snow", "clear")[(i // 5) % 3]
                ),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict], header: list[str] = HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    data = buffer.getvalue().encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


START = datetime(2015, 1, 1, tzinfo=UTC)
