"""The fault-injection benchmark's quick mode runs, writes its figures, and finds a 2σ step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SENSORS = {
    "temperature_c",
    "apparent_temperature_c",
    "humidity",
    "wind_speed_kmph",
    "visibility_km",
    "pressure_mb",
}


def test_quick_mode_writes_its_figures_and_finds_a_two_sigma_step(
    shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "faults.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_sensor_faults",
            "--quick",
            "--data",
            str(shared_data),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["quick"] is True and figures["seconds"] < 60
    assert 0 <= figures["false_faults_per_device_week"] <= 1.0
    clean = figures["clean"]["test"]
    assert clean["hours"] > 8000 and set(clean) >= {"false_faults", "by_test", "by_sensor"}
    faults = figures["faults"]
    assert set(faults) == {"stuck", "spike_2sd", "step_2sd"}
    assert set(faults["stuck"]) == SENSORS | {"wind_bearing_deg"}
    assert set(faults["step_2sd"]) == SENSORS
    for result in faults["step_2sd"].values():
        assert {"median_delay_h", "p90_delay_h", "detected", "missed", "trials"} <= set(result)
    # A 2σ step on a sensor with an anchor is found at the hour it happens.
    for sensor in ("temperature_c", "apparent_temperature_c", "pressure_mb", "humidity"):
        step = faults["step_2sd"][sensor]
        assert step["detected"] == step["trials"] - step["raised_before"] > 0
        assert step["median_delay_h"] is not None and step["median_delay_h"] <= 3
