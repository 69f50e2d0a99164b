"""Keras model → one self-contained ONNX file carrying its ``ModelSpec``, proven equal to Keras."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.protocol.bundle import ModelSpec
from edge_agent.protocol.errors import ProtocolError

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
_MAX_SINGLE_FILE = 2 * 1024**3 - 1  # protobuf's limit for a file without external data
_PARITY_BATCH = 4096


class ExportError(Exception):
    """The model could not be exported as declared (graph inputs/outputs, size, conversion)."""


class ParityError(ExportError):
    """onnxruntime and Keras disagree by more than the tolerance on the reference inputs."""

    def __init__(self, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(
            f"ONNX output differs from Keras by {max_abs_diff:.3g} (tolerance {tolerance:.3g})"
        )
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely it matches the Keras model."""

    path: Path
    sha256: str
    size: int
    max_abs_diff: float
    tolerance: float
    opset: int
    n_parity_rows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "opset": self.opset,
            "n_parity_rows": self.n_parity_rows,
        }


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size in bytes of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _input_signature(spec: ModelSpec) -> tuple[Any, ...]:
    import tensorflow as tf

    signature = []
    for tensor in spec.inputs:
        shape = [d if isinstance(d, int) else None for d in tensor.shape]
        signature.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=tensor.name))
    return tuple(signature)


def _check_graph(model_proto: Any, spec: ModelSpec) -> None:
    initializers = {i.name for i in model_proto.graph.initializer}
    inputs = [i.name for i in model_proto.graph.input if i.name not in initializers]
    declared = [t.name for t in spec.inputs]
    if inputs != declared:
        raise ExportError(
            f"ONNX graph inputs {inputs} differ from the declared inputs {declared} "
            "(normalisation layers must not become extra inputs)"
        )
    outputs = {o.name for o in model_proto.graph.output}
    missing = [t.name for t in spec.outputs if t.name not in outputs]
    if missing:
        raise ExportError(f"ONNX graph lacks declared outputs {missing}; it has {sorted(outputs)}")


def _keras_outputs(
    model: Any, inputs: Mapping[str, npt.NDArray[Any]], names: list[str]
) -> dict[str, npt.NDArray[np.float64]]:
    feed: Any = next(iter(inputs.values())) if len(inputs) == 1 else dict(inputs)
    raw = model.predict(feed, batch_size=_PARITY_BATCH, verbose=0)
    if isinstance(raw, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    values = raw if isinstance(raw, list | tuple) else [raw]
    keras_names = list(getattr(model, "output_names", None) or names)
    return {n: np.asarray(v, dtype=np.float64) for n, v in zip(keras_names, values, strict=False)}


def onnx_keras_max_abs_diff(
    model: Any, onnx_bytes: bytes, inputs: Mapping[str, npt.NDArray[Any]], outputs: list[str]
) -> float:
    """Largest absolute difference over ``outputs`` between Keras and onnxruntime."""
    session = load_session(onnx_bytes)
    got = session.run(outputs, dict(inputs))
    expected = _keras_outputs(model, inputs, outputs)
    worst = 0.0
    for name, value in zip(outputs, got, strict=True):
        if name not in expected:
            raise ExportError(f"Keras model has no output named {name!r}")
        if np.shape(value) != expected[name].shape:
            raise ExportError(
                f"output {name!r}: ONNX shape {np.shape(value)} vs Keras {expected[name].shape}"
            )
        diff = np.abs(np.asarray(value, dtype=np.float64) - expected[name])
        if not np.all(np.isfinite(diff)):
            return float("inf")
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def export_keras(
    model: Any,
    spec: ModelSpec,
    path: Path,
    parity_inputs: Mapping[str, npt.NDArray[Any]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    extra_metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Convert with ``tf2onnx.convert.from_keras``, check, embed the spec, write one file.

    ``from_keras`` (rather than ``from_function`` or Keras' own export) keeps preprocessing
    layers such as ``Normalization`` inside the graph instead of turning their statistics
    into extra inputs; the input check below would catch it if that ever changed. Nothing is
    written when the graph or the parity check fails. ``extra_metadata`` adds further
    metadata entries (e.g. the registry version the file is meant to become).
    """
    import onnx
    import tf2onnx

    if set(parity_inputs) != {t.name for t in spec.inputs}:
        raise ExportError(
            f"parity inputs {sorted(parity_inputs)} must be exactly the declared inputs "
            f"{[t.name for t in spec.inputs]}"
        )
    n_rows = min(len(v) for v in parity_inputs.values())
    if n_rows == 0:
        raise ExportError("parity check needs at least one input row")
    try:
        model_proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=_input_signature(spec), opset=opset
        )
    except (ValueError, TypeError, RuntimeError) as e:
        raise ExportError(f"tf2onnx could not convert the model: {e}") from e
    _check_graph(model_proto, spec)
    for key, value in {**(extra_metadata or {}), **spec.to_metadata()}.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    model_proto.producer_name = "edge-mlops cloud-trainer"
    onnx_bytes = model_proto.SerializeToString()
    if len(onnx_bytes) > _MAX_SINGLE_FILE:
        raise ExportError(f"model of {len(onnx_bytes)} bytes is too big for a single ONNX file")
    onnx.checker.check_model(model_proto)
    diff = onnx_keras_max_abs_diff(model, onnx_bytes, parity_inputs, [t.name for t in spec.outputs])
    log.info("ONNX parity: max abs diff %.3g on %s rows (tolerance %.3g)", diff, n_rows, tolerance)
    if not diff <= tolerance:
        raise ParityError(diff, tolerance)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        f.write(onnx_bytes)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    sha256, size = file_digest(path)
    return ExportReport(path, sha256, size, diff, tolerance, opset, n_rows)


def session_load_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises for a file that is not a loadable model: its own error types
    are not all RuntimeErrors, and a bad path or truncated file comes as OSError/ValueError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    return (
        RuntimeError,
        ValueError,
        OSError,
        ort_errors.Fail,
        ort_errors.InvalidArgument,
        ort_errors.InvalidGraph,
        ort_errors.InvalidProtobuf,
        ort_errors.NoSuchFile,
        ort_errors.NotImplemented,
    )


def load_session(source: Path | bytes) -> Any:
    """A CPU onnxruntime session, or ExportError naming the file when it cannot be loaded."""
    import onnxruntime as ort

    load_errors = session_load_errors()
    name = "model bytes" if isinstance(source, bytes) else str(source)
    try:
        return ort.InferenceSession(
            source if isinstance(source, bytes) else str(source),
            providers=["CPUExecutionProvider"],
        )
    except load_errors as e:
        raise ExportError(f"{name}: not a loadable ONNX model: {e}") from e


def read_spec(path: Path) -> ModelSpec:
    """The spec embedded in an ONNX file, read the way a device reads it (onnxruntime)."""
    session = load_session(path)
    return spec_of_session(session, str(path))


def spec_of_session(session: Any, name: str) -> ModelSpec:
    """The spec in a loaded session's metadata, or ExportError naming ``name``."""
    metadata = session.get_modelmeta().custom_metadata_map
    try:
        return ModelSpec.from_metadata(metadata)
    except ProtocolError as e:
        raise ExportError(f"{name}: {e}") from e
