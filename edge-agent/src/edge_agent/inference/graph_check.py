"""Does the graph match the spec it carries? Names, element types, shapes, preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnxruntime as ort

from edge_agent.protocol.bundle import ImagePreprocessing, ModelSpec
from edge_agent.protocol.manifest import TensorSpec

# onnxruntime's type strings for the element types the spec can name.
ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "float64": "tensor(double)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "uint8": "tensor(uint8)",
    "int8": "tensor(int8)",
    "bool": "tensor(bool)",
}


def _is_static(dim: Any) -> bool:
    return isinstance(dim, int) and dim > 0


def _shape_problem(kind: str, spec: TensorSpec, graph_shape: Sequence[Any]) -> str | None:
    if len(spec.shape) != len(graph_shape):
        return (
            f"{kind} {spec.name} has rank {len(graph_shape)} in the graph, "
            f"{len(spec.shape)} in the spec"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, graph_shape, strict=True)):
        if _is_static(want) and _is_static(got) and want != got:
            return (
                f"{kind} {spec.name} axis {axis} is {got} in the graph, {want} in the spec "
                f"(graph shape {list(graph_shape)}, spec shape {spec.shape})"
            )
    return None


def _check_tensors(
    kind: str, specs: Sequence[TensorSpec], graph: Sequence[Any], problems: list[str]
) -> None:
    by_name = {node.name: node for node in graph}
    for spec in specs:
        node = by_name.get(spec.name)
        if node is None:
            problems.append(f"{kind} {spec.name} is not in the graph (graph has {sorted(by_name)})")
            continue
        if node.type != ORT_TYPES[spec.dtype]:
            problems.append(
                f"{kind} {spec.name} is {node.type} in the graph, {spec.dtype} in the spec"
            )
        problem = _shape_problem(kind, spec, node.shape)
        if problem:
            problems.append(problem)


def _check_preprocessing(spec: ModelSpec, graph_inputs: Sequence[Any], problems: list[str]) -> None:
    graph_shape = graph_inputs[0].shape
    pre = spec.preprocessing
    if isinstance(pre, ImagePreprocessing):
        if len(graph_shape) != 4:
            problems.append(
                f"image input {graph_inputs[0].name} must have rank 4, has {graph_shape}"
            )
            return
        if pre.layout == "NHWC":
            want = {1: pre.height, 2: pre.width, 3: 3}
        else:
            want = {1: 3, 2: pre.height, 3: pre.width}
        for axis, size in want.items():
            got = graph_shape[axis]
            if _is_static(got) and got != size:
                problems.append(
                    f"image input {graph_inputs[0].name} axis {axis} is {got}, preprocessing "
                    f"({pre.layout} {pre.height}x{pre.width}) makes {size}"
                )
        return
    if len(graph_shape) != 2:
        problems.append(f"tabular input {graph_inputs[0].name} must have rank 2, has {graph_shape}")
        return
    if _is_static(graph_shape[1]) and graph_shape[1] != len(pre.features):
        problems.append(
            f"tabular input {graph_inputs[0].name} takes {graph_shape[1]} features, "
            f"preprocessing lists {len(pre.features)}"
        )


def check_graph_against_spec(session: ort.InferenceSession, spec: ModelSpec) -> list[str]:
    """Every disagreement found, in words; empty when the model can be served as specified."""
    problems: list[str] = []
    graph_inputs = session.get_inputs()
    if len(graph_inputs) != 1 or len(spec.inputs) != 1:
        problems.append(
            f"one input expected, graph has {len(graph_inputs)} and spec lists {len(spec.inputs)}"
        )
        return problems
    _check_tensors("input", spec.inputs, graph_inputs, problems)
    _check_tensors("output", spec.outputs, session.get_outputs(), problems)
    if not problems:
        _check_preprocessing(spec, graph_inputs, problems)
    return problems
