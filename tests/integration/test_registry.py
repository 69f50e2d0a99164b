"""Registry and promotion gate on a real MLflow store: versions, aliases, recorded decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.registry import (
    CHALLENGER,
    CHAMPION,
    GATE_ARTIFACT,
    GateInputs,
    ModelNotFoundError,
    alias_version,
    apply_gate,
    decide,
    git_commit,
    log_onnx_model,
    log_run_context,
    register_version,
    resolve_model,
    score_champion,
)
from cloud_trainer.stack.mlflow_store import MlflowStore

pytestmark = pytest.mark.integration

MODEL = "registry-check"
PROBE = np.array([[1.0, 2.0]], dtype=np.float32)


def scaling_model(path: Path, scale: float) -> Path:
    """A real ONNX graph y = scale * x, so each version scores differently."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "g", [x], [y], [k])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, str(path))
    return path


def score(path: Path) -> float:
    """The 'evaluation' used by the gate: the model's mean output on a fixed probe."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(session.run(None, {"x": PROBE})[0].mean())


def train_and_register(store: MlflowStore, tmp_path: Path, scale: float):
    import mlflow

    onnx_path = scaling_model(tmp_path / f"m{scale}.onnx", scale)
    with mlflow.start_run(experiment_id=store.experiment("registry-check")) as run:
        log_run_context(
            params={"scale": scale, "search": {"units": 8}},
            metrics={"test": {"score": score(onnx_path)}, "note": "text is skipped"},
            data_version="d" * 16,
            commit=git_commit(),
        )
        uri = log_onnx_model(onnx_path)
    return run.info.run_id, onnx_path, register_version(MODEL, uri, run.info.run_id)


def gate_inputs(version: int, candidate: float, **overrides) -> GateInputs:
    fields = {
        "model_name": MODEL,
        "version": version,
        "primary_metric": "score",
        "split": "probe",
        "candidate": candidate,
        "parity_ok": True,
        "max_abs_diff": 0.0,
        "baseline_name": "persistence",
        "baseline": 1.0,
        **overrides,
    }
    return GateInputs.model_validate(fields)


def test_register_gate_and_aliases(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id, _, v1 = train_and_register(mlflow_store, tmp_path, 2.0)
    assert v1.version == 1
    assert alias_version(MODEL, CHALLENGER) == 1
    assert alias_version(MODEL, CHAMPION) is None
    run = client.get_run(run_id)
    assert run.data.params["search.units"] == "8"
    assert run.data.metrics["test.score"] == pytest.approx(3.0)
    assert "note" not in run.data.metrics
    assert run.data.tags["data_version"] == "d" * 16

    # The registry hands back the same graph as one file, with its digest.
    resolved = resolve_model(f"models:/{MODEL}@{CHALLENGER}", tmp_path / "dl")
    assert resolved.version == 1 and resolved.name == MODEL
    assert score(resolved.path) == pytest.approx(3.0)
    assert resolved.size == resolved.path.stat().st_size
    assert list(resolved.path.parent.glob("*.data")) == []

    # No champion yet: beating the baseline with parity is enough.
    champion = score_champion(MODEL, score)
    assert champion == (None, None, None)
    decision = apply_gate(decide(gate_inputs(1, 3.0)), run_id)
    assert decision.promote
    assert alias_version(MODEL, CHAMPION) == 1
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["gate.promote"] == "true" and "beats persistence" in tags["gate.reasons"]
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=GATE_ARTIFACT, dst_path=str(tmp_path / "gate")
    )
    recorded = json.loads(Path(local).read_text())
    assert recorded["promote"] is True and recorded["inputs"]["candidate"] == 3.0

    # A worse challenger does not displace the champion, scored on the same probe.
    run2, _, v2 = train_and_register(mlflow_store, tmp_path, 1.5)
    assert alias_version(MODEL, CHALLENGER) == 2
    champion_version, champion_score, error = score_champion(MODEL, score)
    assert champion_version == 1 and error is None
    assert champion_score == pytest.approx(3.0)
    decision = apply_gate(
        decide(gate_inputs(2, 2.25, champion_version=1, champion=champion_score)), run2
    )
    assert not decision.promote
    assert any("does not beat champion" in r for r in decision.reasons)
    assert alias_version(MODEL, CHAMPION) == 1
    assert client.get_model_version(MODEL, "2").tags["gate.promote"] == "false"

    # A better one with failed parity is refused too; with parity it is promoted.
    _, _, v3 = train_and_register(mlflow_store, tmp_path, 4.0)
    assert not decide(
        gate_inputs(3, 6.0, parity_ok=False, champion_version=1, champion=3.0)
    ).promote
    assert apply_gate(decide(gate_inputs(3, 6.0, champion_version=1, champion=3.0))).promote
    assert alias_version(MODEL, CHAMPION) == 3
    by_number = resolve_model(f"models:/{MODEL}/2", tmp_path / "dl2")
    assert score(by_number.path) == pytest.approx(2.25)
    assert v2.uri == f"models:/{MODEL}/2" and v3.version == 3


def test_champion_that_cannot_be_scored_blocks_promotion(
    mlflow_store: MlflowStore, tmp_path: Path
) -> None:
    train_and_register(mlflow_store, tmp_path, 2.0)
    apply_gate(decide(gate_inputs(1, 3.0)))

    def incompatible(path: Path) -> float:
        raise ValueError(f"{path.name}: feature set weather-hourly-v0 is not this split's")

    version, value, error = score_champion(MODEL, incompatible)
    assert version == 1 and value is None and error is not None and "weather-hourly-v0" in error
    decision = decide(gate_inputs(2, 9.0, champion_version=1, champion=None, champion_error=error))
    assert not decision.promote
    assert any("could not be scored" in r for r in decision.reasons)


def test_resolve_paths_and_bad_references(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    path = scaling_model(tmp_path / "plain.onnx", 1.0)
    resolved = resolve_model(path)
    assert resolved.path == path and resolved.version is None and len(resolved.sha256) == 64
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelNotFoundError, match="bad model reference"):
        resolve_model("models:/has space@x")
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        resolve_model("models:/never-registered/1")
    train_and_register(mlflow_store, tmp_path, 2.0)
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        resolve_model(f"models:/{MODEL}@{CHAMPION}")
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        resolve_model(f"models:/{MODEL}/7")
