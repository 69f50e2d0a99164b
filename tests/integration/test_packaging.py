"""The device package stays small: no cloud libraries in its dependency closure."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from cloud_trainer.stack.mosquitto import free_port
from tests.conftest import ROOT
from tests.integration.agent_fixtures import camera_config, station_config

FORBIDDEN = re.compile(r"^(tensorflow.*|keras|mlflow.*|pandas|tf2onnx|torch)$", re.IGNORECASE)


def _closure(dist: str) -> set[str]:
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_edge_agent_closure_has_no_cloud_libraries() -> None:
    closure = _closure("edge-agent")
    assert "onnxruntime" in closure and "paho-mqtt" in closure
    assert not [d for d in closure if FORBIDDEN.match(d)]


def test_cloud_trainer_depends_on_edge_agent() -> None:
    assert "edge-agent" in _closure("cloud-trainer")


def test_edge_lock_has_no_cloud_libraries() -> None:
    names = [
        line.split("==")[0]
        for line in (ROOT / "edge-agent" / "requirements.lock").read_text().splitlines()
        if "==" in line
    ]
    assert "onnxruntime" in names
    assert not [n for n in names if FORBIDDEN.match(n)]


def _lock_names(name: str) -> list[str]:
    lock = (ROOT / "edge-agent" / name).read_text().splitlines()
    return [line.split("==")[0].lower() for line in lock if "==" in line]


def _project(side: str) -> dict:
    project: dict = tomllib.loads((ROOT / side / "pyproject.toml").read_text())["project"]
    return project


def test_opencv_comes_only_with_the_camera_extra() -> None:
    edge = _project("edge-agent")
    assert not [r for r in edge["dependencies"] if Requirement(r).name.startswith("opencv")]
    camera = [Requirement(r).name for r in edge["optional-dependencies"]["camera"]]
    assert camera == ["opencv-python-headless"]
    assert not [n for n in _lock_names("requirements.lock") if n.startswith("opencv")]
    assert _lock_names("requirements-camera.lock") == ["opencv-python-headless"]
    cloud = [Requirement(r) for r in _project("cloud-trainer")["dependencies"]]
    assert [r.extras for r in cloud if r.name == "edge-agent"] == [{"camera"}]


@pytest.mark.integration
def test_station_venv_runs_a_station_and_refuses_a_camera_naming_the_extra(
    tmp_path: Path,
) -> None:
    station_venv = os.environ.get("STATION_VENV")
    if not station_venv:
        pytest.skip("STATION_VENV not set (scripts/test.sh builds it)")
    python = str(Path(station_venv) / "bin" / "python")
    probe = "import importlib.util as u; print(u.find_spec('cv2') is None)"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout == "True\n"
    station = station_config(tmp_path / "station", free_port(), hours=30)
    data = station.model_dump(mode="json", exclude_none=True)
    data["limits"]["flush_timeout_s"] = 0.5
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    run = [python, "-m", "edge_agent", "run", "--config"]
    ran = subprocess.run([*run, str(path), "--exit-at-end"], capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]
    camera = camera_config(tmp_path / "camera", free_port(), frames=5)
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(camera.model_dump(mode="json", exclude_none=True)))
    refused = subprocess.run([*run, str(path)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "cannot start: the camera source needs OpenCV" in refused.stderr
    assert "edge-agent[camera]" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.integration
def test_device_venv_imports_the_contract_without_cloud_libraries() -> None:
    edge_venv = os.environ.get("EDGE_VENV")
    if not edge_venv:
        pytest.skip("EDGE_VENV not set (scripts/test.sh builds it)")
    python = Path(edge_venv) / "bin" / "python"
    code = (
        "import sys, edge_agent.protocol, edge_agent.comms;"
        "bad=[m for m in ('tensorflow','mlflow','pandas','keras') if m in sys.modules];"
        "import importlib.util as u;"
        "missing=[m for m in ('tensorflow','mlflow','pandas') if u.find_spec(m) is None];"
        "print(len(bad), len(missing))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "3"]
