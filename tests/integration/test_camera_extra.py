"""OpenCV is the camera extra: a station never loads it, a camera without it stops at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud_trainer.stack.mosquitto import free_port
from edge_agent.outbox import OutboxStore
from tests.integration.agent_fixtures import camera_config, station_config

pytestmark = pytest.mark.integration

# What an install without edge-agent[camera] looks like to Python: ``import cv2`` fails and
# ``importlib.util.find_spec("cv2")`` finds nothing. (test_packaging runs the real station
# environment where scripts/test.sh builds one.)
HIDE_OPENCV = "import sys; sys.modules['cv2'] = None\n"
RUN_CLI = (
    "from edge_agent.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print(json.dumps({'rc': rc, 'opencv_loaded': sys.modules.get('cv2') is not None}))\n"
)


def _cli(*args: str, hide_opencv: bool = False) -> subprocess.CompletedProcess[str]:
    code = (HIDE_OPENCV if hide_opencv else "import sys\n") + "import json\n" + RUN_CLI
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def _result(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _station(tmp_path: Path) -> dict:
    """A station with every part a station runs on: drift, sensor health, the API."""
    config = station_config(tmp_path, free_port(), hours=30).model_dump(
        mode="json", exclude_none=True
    )
    config["limits"]["flush_timeout_s"] = 0.5  # no broker: predictions stay in the outbox
    config["drift"] = {"detectors": ["accuracy"]}
    config["api"] = {"enabled": True, "port": 0}
    return config


def _camera(tmp_path: Path) -> dict:
    config = camera_config(tmp_path, free_port(), frames=5).model_dump(
        mode="json", exclude_none=True
    )
    config["api"] = {"enabled": False}
    return config


def test_a_station_runs_to_the_end_without_ever_importing_opencv(tmp_path: Path) -> None:
    config = _station(tmp_path)
    path = _write(tmp_path / "station.yaml", config)
    proc = _cli("run", "--config", str(path), "--exit-at-end")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _result(proc) == {"rc": 0, "opencv_loaded": False}, proc.stderr[-2000:]
    store = OutboxStore(Path(config["limits"]["outbox_path"]))
    payloads = [json.loads(r.payload) for r in store.fetch(-1, 1000)]
    assert sum(p["type"] == "prediction" for p in payloads) > 0  # the whole path ran


def test_a_station_runs_where_opencv_is_not_installed(tmp_path: Path) -> None:
    path = _write(tmp_path / "station.yaml", _station(tmp_path))
    proc = _cli("run", "--config", str(path), "--exit-at-end", hide_opencv=True)
    assert _result(proc) == {"rc": 0, "opencv_loaded": False}, proc.stderr[-2000:]


def test_a_camera_without_the_extra_stops_at_start_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "camera.yaml", _camera(tmp_path))
    proc = _cli("run", "--config", str(path), hide_opencv=True)
    assert _result(proc)["rc"] == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert "cannot start: the camera source needs OpenCV" in errors[0]
    assert "edge-agent[camera]" in errors[0]
    assert "Traceback" not in proc.stderr


def test_validate_config_and_doctor_name_the_missing_extra(tmp_path: Path) -> None:
    path = _write(tmp_path / "camera.yaml", _camera(tmp_path))
    noted = _cli("validate-config", str(path), hide_opencv=True)
    assert _result(noted)["rc"] == 0  # off the device it is a note
    assert f"{path}: note: the camera source needs OpenCV" in noted.stdout
    assert "pip install 'edge-agent[camera]'" in noted.stdout
    checked = _cli("validate-config", "--check-files", str(path), hide_opencv=True)
    assert _result(checked)["rc"] == 1  # on the device this install cannot run it
    doctor = _cli("doctor", "--config", str(path), hide_opencv=True)
    assert _result(doctor)["rc"] == 1
    failed = {line.split()[1]: line for line in doctor.stdout.splitlines() if line[:4] == "FAIL"}
    assert set(failed) >= {"model", "source"}
    assert all("edge-agent[camera]" in failed[name] for name in ("model", "source"))
    station = _write(tmp_path / "station.yaml", _station(tmp_path))
    quiet = _cli("validate-config", "--check-files", str(station), hide_opencv=True)
    assert _result(quiet)["rc"] == 0 and "OpenCV" not in quiet.stdout
