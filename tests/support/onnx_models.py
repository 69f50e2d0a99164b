"""Tiny real ONNX models built with ``onnx.helper`` (no Keras), each carrying a valid ModelSpec.

Other tests (agent runtime, updater, drift, API) use these to get a real onnxruntime session in
milliseconds:

- ``image_classifier(path, ...)``: input ``image`` float32 ``[N, H, W, 3]`` (RGB, 0-1, as
  ``prepare_image`` makes it), outputs ``probs`` ``[N, 2]`` (softmax over ``cat``/``dog``) and
  ``embedding`` ``[N, 8]``. The decision is the mean colour: a red-ish frame is ``cat``, a
  blue-ish frame is ``dog`` (``red_frame()`` / ``blue_frame()`` make such BGR frames).
  Options: ``nan_output`` (every probability NaN), ``slow_matmuls`` (that many chained
  512x512 MatMuls per call, ~5-10 ms each on one core, feeding the output by a zero weight),
  ``graph_size`` (build the graph for another H/W than the spec says: a model whose input
  shape does not match its spec), ``positive_label``/``threshold``, ``bias`` (shifts the
  dog logit, so two versions of a model disagree).
- ``presence_classifier(path, ...)``: like ``image_classifier`` with a third label,
  ``no_pet``, and a ``PresenceRule`` (answered at ``absent_at``): red votes ``cat``, blue
  ``dog``, green ``no_pet`` (``green_frame()`` is an empty scene; ``tinted_frame`` mixes).
- ``weather_classifier(path, ...)``: input ``features`` float32 ``[N, F]`` over
  ``FEATURE_NAMES`` of ``edge_agent.features.weather``, output ``probs`` ``[N, 2]`` over
  ``no_rain``/``rain`` (positive ``rain``, threshold 0.5): rain when humidity is high and
  pressure falls. Options: ``nan_output``, ``normalised_in_graph``, ``feature_names``,
  ``sensor_health`` (the station's sensor-health baseline in the spec).
- ``write_without_spec(path)``: a valid ONNX graph with no spec in its metadata.
- ``write_not_onnx(path)``: bytes that are not a model.

Every builder writes the file and returns the ``ModelSpec`` it embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.features.weather import FEATURE_NAMES, FEATURE_SET
from edge_agent.protocol.bundle import (
    DriftBaseline,
    ImagePreprocessing,
    ModelSpec,
    PresenceRule,
    TabularPreprocessing,
)
from edge_agent.protocol.manifest import TensorSpec
from edge_agent.protocol.sensors import SensorHealthBaseline

OPSET = 17
IR_VERSION = 8
SLOW_SIZE = 512
EMBEDDING_DIM = 8


def _save(graph: onnx.GraphProto, spec: ModelSpec | None, path: Path) -> None:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-mlops-tests"
    )
    model.ir_version = IR_VERSION
    if spec is not None:
        helper.set_model_props(model, spec.to_metadata())
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _slow_branch(
    source: str, count: int, nodes: list, inits: list, target: str = "logits_raw"
) -> str:
    """Chain ``count`` KxK MatMuls seeded by ``source`` ([N, C]); add 0 x result to ``target``."""
    rng = np.random.default_rng(7)
    inits.append(_const("slow_w", rng.normal(0, 1 / np.sqrt(SLOW_SIZE), (SLOW_SIZE, SLOW_SIZE))))
    inits.append(_const("slow_seed", np.ones((SLOW_SIZE, SLOW_SIZE))))
    inits.append(_const("slow_zero", np.zeros(1)))
    nodes.append(helper.make_node("ReduceMean", [source], ["slow_s"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["slow_seed", "slow_s"], ["slow_0"]))
    for i in range(count):
        nodes.append(helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"slow_m{i}"], [f"slow_{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"slow_{count}"], ["slow_mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nil"]))
    nodes.append(helper.make_node("Add", [target, "slow_nil"], [f"{target}_slow"]))
    return f"{target}_slow"


def _finish_probs(logits: str, nan_output: bool, nodes: list, inits: list) -> None:
    if nan_output:
        inits.append(_const("nan_const", np.array([np.nan])))
        nodes.append(helper.make_node("Mul", [logits, "nan_const"], ["logits_nan"]))
        logits = "logits_nan"
    nodes.append(helper.make_node("Softmax", [logits], ["probs"], axis=-1))


def image_classifier(
    path: Path,
    *,
    name: str = "catdog",
    size: int = 32,
    labels: Sequence[str] = ("cat", "dog"),
    nan_output: bool = False,
    slow_matmuls: int = 0,
    graph_size: int | None = None,
    positive_label: str | None = None,
    threshold: float | None = None,
    bias: float = 0.0,
    drift: DriftBaseline | None = None,
) -> ModelSpec:
    gs = graph_size or size
    nodes: list = []
    rng = np.random.default_rng(3)
    inits = [
        # mean RGB -> logits: red votes for labels[0], blue for labels[1].
        _const("w_cls", np.array([[4.0, -4.0], [0.0, 0.0], [-4.0, 4.0]])),
        _const("b_cls", np.array([0.0, bias])),
        _const("w_emb", rng.normal(0, 1, (3, EMBEDDING_DIM))),
    ]
    nodes.append(helper.make_node("ReduceMean", ["image"], ["mean_rgb"], axes=[1, 2], keepdims=0))
    nodes.append(helper.make_node("MatMul", ["mean_rgb", "w_cls"], ["logits_mm"]))
    nodes.append(helper.make_node("Add", ["logits_mm", "b_cls"], ["logits_raw"]))
    nodes.append(helper.make_node("MatMul", ["mean_rgb", "w_emb"], ["emb_mm"]))
    nodes.append(helper.make_node("Tanh", ["emb_mm"], ["embedding"]))
    logits = "logits_raw"
    if slow_matmuls:
        logits = _slow_branch("mean_rgb", slow_matmuls, nodes, inits)
    _finish_probs(logits, nan_output, nodes, inits)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", gs, gs, 3])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMBEDDING_DIM]),
        ],
        initializer=inits,
    )
    spec = ModelSpec(
        name=name,
        task="image_classification",
        labels=list(labels),
        inputs=[TensorSpec(name="image", dtype="float32", shape=["N", size, size, 3])],
        outputs=[
            TensorSpec(name="probs", dtype="float32", shape=["N", 2]),
            TensorSpec(name="embedding", dtype="float32", shape=["N", EMBEDDING_DIM]),
        ],
        probabilities_output="probs",
        embedding_output="embedding",
        positive_label=positive_label,
        decision_threshold=threshold,
        preprocessing=ImagePreprocessing(height=size, width=size),
        drift=drift or DriftBaseline(),
    )
    _save(graph, spec, Path(path))
    return spec


def presence_classifier(
    path: Path,
    *,
    name: str = "catdog",
    size: int = 32,
    absent_at: float = 0.5,
    drift: DriftBaseline | None = None,
) -> ModelSpec:
    labels = ["cat", "dog", "no_pet"]
    rng = np.random.default_rng(5)
    inits = [
        # mean RGB -> logits: red votes cat, blue dog, green no_pet.
        _const("w_cls", np.array([[6.0, -3.0, -3.0], [-3.0, -3.0, 6.0], [-3.0, 6.0, -3.0]])),
        _const("w_emb", rng.normal(0, 1, (3, EMBEDDING_DIM))),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean_rgb"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean_rgb", "w_cls"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["mean_rgb", "w_emb"], ["emb_mm"]),
        helper.make_node("Tanh", ["emb_mm"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMBEDDING_DIM]),
        ],
        initializer=inits,
    )
    spec = ModelSpec(
        name=name,
        task="image_classification",
        labels=labels,
        inputs=[TensorSpec(name="image", dtype="float32", shape=["N", size, size, 3])],
        outputs=[
            TensorSpec(name="probs", dtype="float32", shape=["N", 3]),
            TensorSpec(name="embedding", dtype="float32", shape=["N", EMBEDDING_DIM]),
        ],
        probabilities_output="probs",
        embedding_output="embedding",
        preprocessing=ImagePreprocessing(height=size, width=size),
        drift=drift or DriftBaseline(),
        presence=PresenceRule(absent_label="no_pet", absent_at=absent_at),
    )
    _save(graph, spec, Path(path))
    return spec


def weather_classifier(
    path: Path,
    *,
    name: str = "rain4h",
    feature_names: Sequence[str] = FEATURE_NAMES,
    nan_output: bool = False,
    normalised_in_graph: bool = True,
    slow_matmuls: int = 0,
    sensor_health: SensorHealthBaseline | None = None,
) -> ModelSpec:
    names = list(feature_names)
    n = len(names)
    weights = np.zeros((n, 2))
    # Rain: humid air (humidity near 1) and falling pressure; the rest barely matters.
    for feature, w in (("humidity", 8.0), ("pressure_delta_3h", -1.0), ("cond_rain", 1.0)):
        if feature in names:
            weights[names.index(feature), 1] = w
    bias = np.array([0.0, -6.0])
    mean = std = None
    if not normalised_in_graph:
        mean, std = [0.0] * n, [1.0] * n
    nodes: list = [
        helper.make_node("MatMul", ["features", "w"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "b"], ["logits_raw"]),
    ]
    inits = [_const("w", weights), _const("b", bias)]
    logits = "logits_raw"
    if slow_matmuls:
        logits = _slow_branch("features", slow_matmuls, nodes, inits)
    _finish_probs(logits, nan_output, nodes, inits)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        initializer=inits,
    )
    spec = ModelSpec(
        name=name,
        task="tabular_classification",
        labels=["no_rain", "rain"],
        inputs=[TensorSpec(name="features", dtype="float32", shape=["N", n])],
        outputs=[TensorSpec(name="probs", dtype="float32", shape=["N", 2])],
        probabilities_output="probs",
        positive_label="rain",
        decision_threshold=0.5,
        horizon_s=4 * 3600,
        preprocessing=TabularPreprocessing(
            feature_set=FEATURE_SET,
            features=names,
            normalised_in_graph=normalised_in_graph,
            mean=mean,
            std=std,
        ),
        sensor_health=sensor_health,
    )
    _save(graph, spec, Path(path))
    return spec


def write_without_spec(path: Path) -> None:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "nospec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    _save(graph, None, Path(path))


def write_not_onnx(path: Path) -> None:
    Path(path).write_bytes(b"this is not an onnx model\x00\x01\x02" * 10)


def red_frame(height: int = 48, width: int = 64) -> np.ndarray:
    """A BGR frame the image classifier calls ``cat``."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 2] = 220
    return frame


def blue_frame(height: int = 48, width: int = 64) -> np.ndarray:
    """A BGR frame the image classifier calls ``dog``."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = 220
    return frame


def green_frame(height: int = 48, width: int = 64) -> np.ndarray:
    """A BGR frame the presence classifier calls ``no_pet`` (an empty scene)."""
    return tinted_frame(0, 200, 0, height, width)


def tinted_frame(blue: int, green: int, red: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A BGR frame of one colour, with a little texture so its JPEG is not trivially small."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = blue, green, red
    noise = np.random.default_rng(blue * 65536 + green * 256 + red).integers(0, 12, frame.shape)
    return np.clip(frame.astype(np.int16) + noise - 6, 0, 255).astype(np.uint8)
