"""Only the camera's own modules import OpenCV: the rest of the agent, a station's, never does."""

from __future__ import annotations

import json
import subprocess
import sys

# The modules that need OpenCV (edge-agent[camera]); the agent imports them on a camera's
# path only. A new module-level ``import cv2`` anywhere else fails the test below.
CAMERA_ONLY = [
    "edge_agent.features.image",
    "edge_agent.sources.camera",
    "edge_agent.sources.motion",
    "edge_agent.visits.service",
    "edge_agent.visits.snapshots",
]
NOT_IMPORTABLE = ["edge_agent.__main__"]  # runs the CLI

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import edge_agent
skip = set(sys.argv[1:])
names = [m.name for m in pkgutil.walk_packages(edge_agent.__path__, "edge_agent.")]
for name in names:
    if name not in skip:
        importlib.import_module(name)
print(json.dumps({"modules": len(names), "skipped": sorted(skip & set(names)),
                  "opencv": "cv2" in sys.modules}))
"""


def test_no_module_but_the_cameras_imports_opencv() -> None:
    skip = [*CAMERA_ONLY, *NOT_IMPORTABLE]
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *skip], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["skipped"] == sorted(skip)  # the list names real modules
    assert result["modules"] > 80
    assert result["opencv"] is False
