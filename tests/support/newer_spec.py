"""Rewrite a model file's spec as a newer cloud would write it: extra sections, declared or not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from edge_agent.protocol.bundle import SPEC_METADATA_KEY


def rewrite_spec(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Apply ``change`` to the spec JSON inside the ONNX file at ``path`` (in place)."""
    model = onnx.load_model(str(path))
    for prop in model.metadata_props:
        if prop.key == SPEC_METADATA_KEY:
            spec = json.loads(prop.value)
            change(spec)
            prop.value = json.dumps(spec)
            break
    else:
        raise ValueError(f"{path} carries no model spec")
    onnx.save_model(model, str(path))
    return path


def from_a_newer_cloud(spec: dict[str, Any]) -> None:
    """Sections this agent has never heard of, declared optional as a newer writer does."""
    spec["sensor_model"] = {"kind": "linear", "coefficients": [0.1, 0.2]}
    spec.setdefault("drift", {})["weekly"] = {"features": []}
    spec["optional"] = sorted(
        {*spec.get("optional", []), "sensor_model", "drift.weekly", "capture_below"}
    )
