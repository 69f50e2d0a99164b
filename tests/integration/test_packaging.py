"""The device package stays small: no cloud libraries in its dependency closure."""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

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
