"""Static int8 quantisation on a small real ONNX graph: size, fidelity, metadata, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cloud_trainer.export.quantize import QuantizationError, quantize_int8


def _conv_classifier(path: Path) -> None:
    """image (N,3,32,32) → conv 3x3 x64 → relu → pool → matmul 64x2 → softmax."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (64, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(64, np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(0, 0.5, (64, 2)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 64]),
        ],
        [w, b, fc, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "edge_mlops.spec", '{"name": "tiny"}'
    onnx.save_model(model, str(path))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": x})[0]


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_int8_is_smaller_close_and_keeps_metadata(tmp_path: Path, method: str) -> None:
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    _conv_classifier(fp32)
    x = np.random.default_rng(1).uniform(-1, 1, (40, 3, 32, 32)).astype(np.float32)
    report = quantize_int8(fp32, int8, x[:20], method=method, metadata={"extra": "int8"})  # type: ignore[arg-type]
    assert report.size < report.fp32_size and report.n_calibration == 20
    ops = {n.op_type for n in onnx.load_model(str(int8)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    meta = {p.key: p.value for p in onnx.load_model(str(int8)).metadata_props}
    assert meta["edge_mlops.spec"] == '{"name": "tiny"}' and meta["extra"] == "int8"
    ref, got = _run(fp32, x[20:]), _run(int8, x[20:])
    assert np.abs(ref - got).max() < 0.05
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9


def test_bad_calibration_and_bad_model_are_named(tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    _conv_classifier(fp32)
    x = np.ones((4, 3, 32, 32), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_int8(fp32, tmp_path / "int8.onnx", x)
    with pytest.raises(QuantizationError, match="at least one"):
        quantize_int8(fp32, tmp_path / "int8.onnx", x[:0])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(fp32.read_bytes()[:100])
    with pytest.raises(QuantizationError, match=r"broken\.onnx"):
        quantize_int8(broken, tmp_path / "int8.onnx", np.ones((4, 3, 32, 32), np.float32))
    assert not (tmp_path / "int8.onnx").exists()
