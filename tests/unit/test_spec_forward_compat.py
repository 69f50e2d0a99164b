"""A model spec from a newer cloud: optional sections skipped, a newer core refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edge_agent.inference import InferenceEngine, ModelLoadError
from edge_agent.protocol import ProtocolError
from edge_agent.protocol.bundle import SPEC_METADATA_KEY, ModelSpec
from tests.support.newer_spec import from_a_newer_cloud, rewrite_spec
from tests.support.onnx_models import image_classifier


def _spec_json(path: Path) -> dict[str, Any]:
    spec = image_classifier(path)
    return json.loads(spec.to_metadata()[SPEC_METADATA_KEY])


def _read(data: dict[str, Any]) -> ModelSpec:
    return ModelSpec.from_metadata({SPEC_METADATA_KEY: json.dumps(data)})


def test_declared_sections_this_agent_does_not_know_are_skipped_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _spec_json(tmp_path / "m.onnx")
    from_a_newer_cloud(data)
    with caplog.at_level(logging.INFO, logger="edge_agent.protocol.bundle"):
        spec = _read(data)
    assert spec.name == "catdog" and spec.labels == ["cat", "dog"]
    assert "sensor_model" in caplog.text and "drift.weekly" in caplog.text
    assert "capture_below" not in caplog.text.split("know:")[-1]  # known: not skipped


def test_an_undeclared_unknown_field_is_core_and_refused(tmp_path: Path) -> None:
    data = _spec_json(tmp_path / "m.onnx")
    data["sensor_model"] = {"kind": "linear"}
    with pytest.raises(ProtocolError, match=r"sensor_model.*needs a newer agent"):
        _read(data)
    data["optional"] = ["drift.weekly"]  # declaring another section does not cover it
    with pytest.raises(ProtocolError, match="needs a newer agent"):
        _read(data)


def test_a_newer_core_is_refused_by_name(tmp_path: Path) -> None:
    data = _spec_json(tmp_path / "m.onnx")
    data["spec_version"] = 2
    with pytest.raises(ProtocolError, match="core version 2 needs a newer agent"):
        _read(data)


def test_specs_old_agents_can_read_stay_readable_by_them(tmp_path: Path) -> None:
    """No capture level: nothing new, so no ``optional`` key and any agent reads it."""
    plain = image_classifier(tmp_path / "plain.onnx")
    written = json.loads(plain.to_metadata()[SPEC_METADATA_KEY])
    assert "optional" not in written and plain.min_agent_version() == "0.1.0"
    newer = plain.model_copy(update={"capture_below": 0.9, "capture_quantile": 0.1})
    written = json.loads(newer.to_metadata()[SPEC_METADATA_KEY])
    assert written["optional"] == ["capture_below", "capture_quantile"]
    assert newer.min_agent_version() == "0.2.0"
    assert ModelSpec.from_metadata(newer.to_metadata()) == newer


def test_the_agent_loads_a_model_from_a_newer_cloud(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    image_classifier(path)
    engine = InferenceEngine.load(rewrite_spec(path, from_a_newer_cloud))
    assert engine.spec.name == "catdog"
    rewrite_spec(path, lambda s: s.update(spec_version=2))
    with pytest.raises(ModelLoadError, match="needs a newer agent"):
        InferenceEngine.load(path)
