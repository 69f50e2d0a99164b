"""HistGradientBoostingClassifier → one parity-checked ONNX tree ensemble carrying its spec.

Written against onnx's own helpers rather than skl2onnx: skl2onnx 1.20.0 (the newest release)
cannot convert this estimator with onnx 1.23 (it passes Python booleans where onnx now demands
integers), and the ensemble is a single standard ``ai.onnx.ml`` operator that onnxruntime runs
on every device build. The parity check on every export is what keeps this honest if
scikit-learn ever changes its tree layout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.export.keras_onnx import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    ExportError,
    ExportReport,
    ParityError,
    _check_graph,
    file_digest,
    load_session,
)
from edge_agent.protocol.bundle import ModelSpec

log = logging.getLogger(__name__)

ML_OPSET = 3  # ai.onnx.ml TreeEnsembleClassifier-3: onnxruntime ≥ 1.11 runs it
LABEL_OUTPUT = "label"
_TREE_ATTRIBUTES = (
    "nodes_treeids",
    "nodes_nodeids",
    "nodes_featureids",
    "nodes_modes",
    "nodes_values",
    "nodes_truenodeids",
    "nodes_falsenodeids",
    "nodes_missing_value_tracks_true",
    "class_treeids",
    "class_nodeids",
    "class_ids",
    "class_weights",
)


class TreeParityError(ParityError):
    """onnxruntime and scikit-learn disagree by more than the tolerance."""

    def __init__(self, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(max_abs_diff, tolerance)
        self.args = (
            f"ONNX output differs from scikit-learn by {max_abs_diff:.3g} "
            f"(tolerance {tolerance:.3g})",
        )


def float32_at_most(value: float) -> float:
    """The largest float32 ≤ ``value``.

    scikit-learn compares ``float64(x) <= threshold``; onnxruntime compares float32 x with a
    float32 threshold. For every float32 x the two agree exactly when the threshold is rounded
    down, never to the nearest float32 (which may sit above it and flip rows onto the other
    branch).
    """
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def _check_supported(model: Any) -> None:
    if not hasattr(model, "_predictors"):
        raise ExportError(f"{type(model).__name__} is not a fitted HistGradientBoostingClassifier")
    classes = [int(c) for c in getattr(model, "classes_", [])]
    if classes != [0, 1] or model.n_trees_per_iteration_ != 1:
        raise ExportError(f"only binary classifiers with classes [0, 1] convert, not {classes}")
    if getattr(model, "is_categorical_", None) is not None:
        raise ExportError("categorical features are not supported by this converter")


def hist_gbt_to_onnx(
    model: Any, n_features: int, input_name: str, output_name: str, opset: int = DEFAULT_OPSET
) -> Any:
    """The model as one ``TreeEnsembleClassifier``: outputs ``label`` and ``output_name``
    ([P(class 0), P(class 1)], float32), from raw float32 rows named ``input_name``."""
    from onnx import TensorProto, helper

    _check_supported(model)
    attrs: dict[str, Any] = {name: [] for name in _TREE_ATTRIBUTES}
    for tree_id, (predictor,) in enumerate(model._predictors):
        for node_id, node in enumerate(predictor.nodes):
            leaf = bool(node["is_leaf"])
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_featureids"].append(0 if leaf else int(node["feature_idx"]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_values"].append(0.0 if leaf else float32_at_most(node["num_threshold"]))
            attrs["nodes_truenodeids"].append(0 if leaf else int(node["left"]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(node["right"]))
            missing_left = 0 if leaf else int(node["missing_go_to_left"])
            attrs["nodes_missing_value_tracks_true"].append(missing_left)
            if leaf:
                attrs["class_treeids"].append(tree_id)
                attrs["class_nodeids"].append(node_id)
                attrs["class_ids"].append(0)
                attrs["class_weights"].append(float(node["value"]))
    baseline = float(np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)[0])
    ensemble = helper.make_node(
        "TreeEnsembleClassifier",
        [input_name],
        [LABEL_OUTPUT, output_name],
        domain="ai.onnx.ml",
        name="gbt",
        classlabels_int64s=[0, 1],
        post_transform="LOGISTIC",
        base_values=[baseline],
        **attrs,
    )
    graph = helper.make_graph(
        [ensemble],
        "hist_gradient_boosting",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, 2]),
        ],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="edge-mlops cloud-trainer",
    )


def onnx_sklearn_max_abs_diff(
    model: Any, onnx_bytes: bytes, inputs: npt.NDArray[np.float32], input_name: str, output: str
) -> float:
    """Largest absolute difference between ``predict_proba`` and onnxruntime's output."""
    got = np.asarray(load_session(onnx_bytes).run([output], {input_name: inputs})[0])
    expected = np.asarray(model.predict_proba(inputs), dtype=np.float64)
    if got.shape != expected.shape:
        raise ExportError(f"output {output!r}: ONNX shape {got.shape} vs {expected.shape}")
    diff = np.abs(got.astype(np.float64) - expected)
    return float(diff.max(initial=0.0)) if np.all(np.isfinite(diff)) else float("inf")


def export_hist_gbt(
    model: Any,
    spec: ModelSpec,
    path: Path,
    parity_inputs: Mapping[str, npt.NDArray[Any]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    extra_metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Convert, check the graph against the spec, embed the spec, prove parity, write one file.

    Nothing is written when the graph or the parity check fails (as ``export_keras``).
    """
    import onnx

    if len(spec.inputs) != 1 or set(parity_inputs) != {spec.inputs[0].name}:
        raise ExportError(
            f"parity inputs {sorted(parity_inputs)} must be exactly the one declared input "
            f"{[t.name for t in spec.inputs]}"
        )
    input_name = spec.inputs[0].name
    x = np.asarray(parity_inputs[input_name], dtype=np.float32)
    if len(x) == 0:
        raise ExportError("parity check needs at least one input row")
    n_features = spec.inputs[0].shape[-1]
    if not isinstance(n_features, int) or n_features != model.n_features_in_:
        raise ExportError(
            f"spec input takes {n_features} features, the model {model.n_features_in_}"
        )
    model_proto = hist_gbt_to_onnx(model, n_features, input_name, spec.probabilities_output)
    _check_graph(model_proto, spec)
    for key, value in {**(extra_metadata or {}), **spec.to_metadata()}.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model_proto)
    onnx_bytes = model_proto.SerializeToString()
    diff = onnx_sklearn_max_abs_diff(model, onnx_bytes, x, input_name, spec.probabilities_output)
    log.info("ONNX parity: max abs diff %.3g on %s rows (tolerance %.3g)", diff, len(x), tolerance)
    if not diff <= tolerance:
        raise TreeParityError(diff, tolerance)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        f.write(onnx_bytes)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    sha256, size = file_digest(path)
    return ExportReport(path, sha256, size, diff, tolerance, DEFAULT_OPSET, len(x))
