"""Static int8 quantisation of an exported ONNX model, calibrated on real inputs, with its check."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cloud_trainer.export.keras_onnx import ExportError, file_digest

log = logging.getLogger(__name__)

CalibrationMethod = Literal["minmax", "percentile", "entropy"]
DEFAULT_MAX_DROP = 0.01
# int8 may answer differently from fp32 on at most this share of frames (95 % upper bound).
DEFAULT_MAX_FLIP_RATE = 0.05
FLIP_CONFIDENCE = 0.95
# Softmax stays in float: quantised probabilities come in 1/255 steps, which would flatten the
# confidence histogram the drift monitor watches and tie the scores ROC-AUC ranks.
QUANTISED_OPS = (
    "Conv",
    "MatMul",
    "Gemm",
    "Add",
    "Mul",
    "Clip",
    "Relu",
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
    "Concat",
    "Reshape",
    "Squeeze",
    "Transpose",
)


class QuantizationError(ExportError):
    """The model could not be quantised (bad calibration data, unsupported graph, I/O)."""


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    sha256: str
    size: int
    fp32_size: int
    n_calibration: int
    method: str
    per_channel: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "fp32_size": self.fp32_size,
            "size_ratio": self.size / self.fp32_size,
            "n_calibration": self.n_calibration,
            "method": self.method,
            "per_channel": self.per_channel,
        }


@dataclass(frozen=True)
class AccuracyDropCheck:
    """int8 against fp32 on the same split; passes when the drop is within ``max_drop``."""

    metric: str
    fp32: float
    int8: float
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32 - self.int8

    @property
    def passed(self) -> bool:
        return math.isfinite(self.int8) and self.drop <= self.max_drop + 1e-12

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "fp32": self.fp32,
            "int8": self.int8,
            "drop": self.drop,
            "max_drop": self.max_drop,
            "passed": self.passed,
        }


def check_accuracy_drop(
    metric: str, fp32: float, int8: float, max_drop: float = DEFAULT_MAX_DROP
) -> AccuracyDropCheck:
    check = AccuracyDropCheck(metric, fp32, int8, max_drop)
    log.info(
        "int8 %s %.4f vs fp32 %.4f: drop %.4f (max %.4f) %s",
        metric,
        int8,
        fp32,
        check.drop,
        max_drop,
        "ok" if check.passed else "TOO LARGE",
    )
    return check


@dataclass(frozen=True)
class FlipCheck:
    """int8 against fp32, answer by answer on the same frames: passes when the one-sided
    Clopper-Pearson upper bound of the flip rate is within ``max_rate``.

    A drop in balanced accuracy on a small test split moves in steps of one photo (1/64 of a
    class is 0.016), so a 0.01 limit on it passes or fails by chance; counting the answers
    that changed, with a confidence bound, asks the question the check is for.
    """

    flips: int
    n: int
    max_rate: float
    confidence: float = FLIP_CONFIDENCE

    @property
    def rate(self) -> float:
        return self.flips / self.n if self.n else float("nan")

    @property
    def upper_bound(self) -> float:
        if self.n == 0:
            return 1.0
        if self.flips >= self.n:
            return 1.0
        from scipy.stats import beta

        return float(beta.ppf(self.confidence, self.flips + 1, self.n - self.flips))

    @property
    def passed(self) -> bool:
        return self.n > 0 and self.upper_bound <= self.max_rate + 1e-12

    @property
    def drop(self) -> float:
        """The figure the gate records as the int8 variant's parity difference."""
        return self.upper_bound

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": "flip_rate",
            "flips": self.flips,
            "n": self.n,
            "rate": self.rate,
            "upper_bound": self.upper_bound,
            "confidence": self.confidence,
            "max_rate": self.max_rate,
            "passed": self.passed,
        }


def check_flips(flips: int, n: int, max_rate: float = DEFAULT_MAX_FLIP_RATE) -> FlipCheck:
    check = FlipCheck(flips, n, max_rate)
    log.info(
        "int8 answers differ from fp32 on %s of %s frames: upper bound %.4f (max %.4f) %s",
        flips,
        n,
        check.upper_bound,
        max_rate,
        "ok" if check.passed else "TOO MANY",
    )
    return check


class _ArrayReader:
    """Feeds calibration batches to onnxruntime's calibrator (its CalibrationDataReader API)."""

    def __init__(self, input_name: str, batches: list[npt.NDArray[np.float32]]) -> None:
        self.input_name = input_name
        self._batches = batches
        self._iter: Iterator[npt.NDArray[np.float32]] = iter(batches)

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def _calibration_batches(
    samples: npt.NDArray[np.float32], batch: int
) -> list[npt.NDArray[np.float32]]:
    if samples.ndim < 2 or len(samples) == 0:
        raise QuantizationError("calibration needs at least one input sample")
    if not np.isfinite(samples).all():
        raise QuantizationError("calibration inputs contain NaN or infinite values")
    x = np.ascontiguousarray(samples, dtype=np.float32)
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def write_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Set metadata entries of an ONNX file in place (e.g. the int8 model's own baselines)."""
    import onnx

    proto = onnx.load_model(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: npt.NDArray[np.float32],
    *,
    method: CalibrationMethod = "minmax",
    per_channel: bool = True,
    batch: int = 16,
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    exclude_nodes_containing: Sequence[str] = (),
) -> QuantizeReport:
    """QDQ int8 weights / uint8 activations, calibrated on ``calibration`` (N, ...) inputs.

    The fp32 file's metadata (the model spec) is carried over; ``metadata`` entries replace
    keys of the same name, so the int8 file can carry its own measured baselines. Nodes
    whose name contains one of ``exclude_nodes_containing`` stay in float (small arithmetic
    on probabilities, such as a presence score's logarithms, loses its meaning in 1/255 steps).
    """
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from onnxruntime.quantization import (
        CalibrationMethod as OrtMethod,
    )
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        source = onnx.load_model(str(fp32_path))
    except (OSError, DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise QuantizationError(f"{fp32_path}: cannot load ONNX model: {e}") from e
    graph_inputs = [i.name for i in source.graph.input]
    if len(graph_inputs) != 1:
        raise QuantizationError(f"expected one graph input, found {graph_inputs}")
    carried = {p.key: p.value for p in source.metadata_props}
    carried.update(metadata or {})
    # The histogram calibrators stack per-batch arrays and fail on a short last batch.
    batches = _calibration_batches(calibration, batch if method == "minmax" else 1)
    reader = _ArrayReader(graph_inputs[0], batches)
    methods = {
        "minmax": OrtMethod.MinMax,
        "percentile": OrtMethod.Percentile,
        "entropy": OrtMethod.Entropy,
    }
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    # Work beside the target so the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=int8_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        partial = Path(tmp) / "int8.onnx"
        try:
            if progress is not None:
                progress("preparing graph")
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            excluded = [
                node.name
                for node in onnx.load_model(str(prepared)).graph.node
                if any(part in node.name for part in exclude_nodes_containing)
            ]
            if exclude_nodes_containing and not excluded:
                log.warning("no node matched %s: nothing kept in float", exclude_nodes_containing)
            if progress is not None:
                progress(f"calibrating on {len(calibration)} inputs")
            quantize_static(
                str(prepared),
                str(partial),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                calibrate_method=methods[method],
                op_types_to_quantize=list(QUANTISED_OPS),
                nodes_to_exclude=excluded,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
            write_metadata(partial, carried)
        except (
            OSError,
            RuntimeError,
            ValueError,
            KeyError,
            onnx.onnx_cpp2py_export.checker.ValidationError,
        ) as e:
            raise QuantizationError(f"int8 quantisation of {fp32_path} failed: {e}") from e
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        partial.replace(int8_path)
    sha256, size = file_digest(int8_path)
    fp32_size = fp32_path.stat().st_size
    log.info(
        "int8 model %s: %.2f MB (fp32 %.2f MB), %s calibration inputs, %s",
        int8_path,
        size / 1e6,
        fp32_size / 1e6,
        len(calibration),
        method,
    )
    return QuantizeReport(int8_path, sha256, size, fp32_size, len(calibration), method, per_channel)
