"""Keras → ONNX export: declared inputs only, parity with Keras, spec read back by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.export import ExportError, ParityError, export_keras, file_digest, read_spec
from cloud_trainer.export.keras_onnx import onnx_keras_max_abs_diff
from edge_agent.protocol.bundle import ModelSpec, TabularPreprocessing
from edge_agent.protocol.manifest import TensorSpec

pytestmark = pytest.mark.integration

N_FEATURES = 4


def tabular_spec(input_name: str = "features") -> ModelSpec:
    return ModelSpec(
        name="export-check",
        task="tabular_classification",
        labels=["no", "yes"],
        inputs=[TensorSpec(name=input_name, dtype="float32", shape=[None, N_FEATURES])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[None, 2])],
        probabilities_output="probabilities",
        positive_label="yes",
        decision_threshold=0.4,
        preprocessing=TabularPreprocessing(
            feature_set="check-v1", features=["a", "b", "c", "d"], normalised_in_graph=True
        ),
        data_version="abc123",
    )


def keras_model(seed: int, x: np.ndarray):
    import keras

    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization(name="normalise")
    norm.adapt(x)
    inp = keras.Input(shape=(N_FEATURES,), name="features", dtype="float32")
    hidden = keras.layers.Dense(8, activation="relu")(norm(inp))
    out = keras.layers.Dense(2, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    # Far from zero mean / unit scale, so the normalisation inside the graph matters.
    return (rng.normal(1000, 50, (256, N_FEATURES))).astype(np.float32)


def test_export_parity_and_metadata_round_trip(data: np.ndarray, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    model = keras_model(1, data)
    spec = tabular_spec()
    path = tmp_path / "out" / "model.onnx"
    report = export_keras(model, spec, path, {"features": data})
    assert path.is_file() and not path.with_name("model.onnx.partial").exists()
    assert (report.sha256, report.size) == file_digest(path)
    assert report.max_abs_diff <= 1e-4 and report.n_parity_rows == len(data)
    # Exactly the declared input: the Normalization statistics did not become graph inputs.
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["features"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert read_spec(path) == spec
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probabilities"], {"features": data[:5]})
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, model.predict(data[:5], verbose=0), atol=1e-4)


def test_parity_check_detects_a_different_model(data: np.ndarray, tmp_path: Path) -> None:
    model = keras_model(1, data)
    path = tmp_path / "model.onnx"
    export_keras(model, tabular_spec(), path, {"features": data})
    other = keras_model(2, data)
    diff = onnx_keras_max_abs_diff(other, path.read_bytes(), {"features": data}, ["probabilities"])
    assert diff > 1e-3
    with pytest.raises(ParityError, match="differs from Keras"):
        export_keras(
            model, tabular_spec(), tmp_path / "strict.onnx", {"features": data}, tolerance=-1.0
        )
    assert not (tmp_path / "strict.onnx").exists()


def test_declared_inputs_must_match_the_graph(data: np.ndarray, tmp_path: Path) -> None:
    model = keras_model(1, data)
    with pytest.raises(ExportError, match="parity inputs"):
        export_keras(model, tabular_spec("x"), tmp_path / "m.onnx", {"features": data})
    with pytest.raises(ExportError, match="at least one"):
        export_keras(model, tabular_spec(), tmp_path / "m.onnx", {"features": data[:0]})


def test_read_spec_refuses_tampered_or_bare_models(data: np.ndarray, tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "model.onnx"
    export_keras(keras_model(1, data), tabular_spec(), path, {"features": data})
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        entry.value = entry.value.replace('"labels":["no","yes"]', '"labels":["no"]')
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ExportError, match="labels"):
        read_spec(bad)
    del proto.metadata_props[:]
    onnx.save(proto, str(bad))
    with pytest.raises(ExportError, match=r"no 'edge_mlops\.spec'"):
        read_spec(bad)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ExportError, match="not a loadable ONNX"):
        read_spec(truncated)
