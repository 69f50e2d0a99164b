"""One onnxruntime session plus the model spec that says how to feed it and read it."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.config.extras import ExtraMissing, require_opencv
from edge_agent.inference.errors import InputError, ModelLoadError, OutputError
from edge_agent.inference.graph_check import check_graph_against_spec
from edge_agent.inference.latency import LatencyStats
from edge_agent.protocol.bundle import ImagePreprocessing, ModelSpec, TabularPreprocessing
from edge_agent.protocol.errors import ProtocolError
from edge_agent.sources.sample import Sample

log = logging.getLogger(__name__)

_NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
    "int8": np.int8,
    "bool": np.bool_,
}


_stats_pool: ThreadPoolExecutor | None = None
_stats_pool_lock = threading.Lock()


def _statistics_pool() -> ThreadPoolExecutor:
    """One small pool for every engine: image statistics run while the session runs."""
    global _stats_pool
    with _stats_pool_lock:
        if _stats_pool is None:
            _stats_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-stats")
        return _stats_pool


@dataclass
class Prediction:
    """What one call produced; ``input_stats`` feeds the drift monitor.

    ``input_stats`` is ``image_statistics(frame)`` for a camera model and the feature row
    itself for a tabular model.
    """

    label: str
    confidence: float
    scores: dict[str, float]
    latency_ms: float
    embedding: npt.NDArray[np.float32] | None = None
    input_stats: dict[str, float] = field(default_factory=dict)


class InferenceEngine:
    """A loaded, checked model. ``predict`` is safe to call from several threads at once."""

    def __init__(
        self, session: ort.InferenceSession, spec: ModelSpec, path: Path, sha256: str
    ) -> None:
        self.session = session
        self.spec = spec
        self.path = path
        self.sha256 = sha256
        self.threads = 1
        self.latency = LatencyStats()
        self._input_name = spec.inputs[0].name
        self._input_dtype = _NUMPY_DTYPES[spec.inputs[0].dtype]
        self._fetch = [spec.probabilities_output]
        if spec.embedding_output is not None:
            self._fetch.append(spec.embedding_output)
        self._output_names = [o.name for o in session.get_outputs()]
        pre = spec.preprocessing
        self._mean: npt.NDArray[np.float64] | None = None
        self._std: npt.NDArray[np.float64] | None = None
        if isinstance(pre, TabularPreprocessing) and not pre.normalised_in_graph:
            self._mean = np.asarray(pre.mean, dtype=np.float64)
            self._std = np.asarray(pre.std, dtype=np.float64)
        self._prepare_image: (
            Callable[[npt.NDArray[np.uint8], ImagePreprocessing], npt.NDArray[np.float32]] | None
        ) = None
        self._image_statistics: Callable[[npt.NDArray[np.uint8]], dict[str, float]] | None = None
        if isinstance(pre, ImagePreprocessing):
            # OpenCV is imported for image models only: a weather station never loads it.
            require_opencv(f"image model {spec.name}")
            from edge_agent.features.image import image_statistics, prepare_image

            self._prepare_image = prepare_image
            self._image_statistics = image_statistics

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> InferenceEngine:
        """Open ``path`` on the CPU, read its spec and check the graph agrees with it.

        The bytes hashed are the bytes loaded, so ``sha256`` names exactly what serves.
        """
        path = Path(path)
        if threads < 1:
            raise ValueError("threads must be at least 1")
        try:
            blob = path.read_bytes()
        except FileNotFoundError as e:
            raise ModelLoadError(path, "model file not found") from e
        except OSError as e:
            raise ModelLoadError(path, f"cannot read model file: {e.strerror or e}") from e
        if not blob:
            raise ModelLoadError(path, "model file is empty")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Chosen by measurement (docs/results.md, "Agent memory"; bench_ort_options): without
        # the CPU arena an EfficientNet-Lite0 session holds 30-45 MiB more after its first
        # runs (freed activations stay in the heap) and is no faster; the memory pattern's
        # effect is within the run-to-run noise (a few MiB, 2 % latency); a lower
        # optimisation level saves 18 MiB but triples latency. The rain model's 18 MiB
        # (onnxruntime's code, mostly) move with none of these.
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = True
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's pybind errors share no base class but Exception
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(path, f"not a loadable ONNX model ({first[:300]})") from e
        try:
            spec = ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map)
        except ProtocolError as e:
            raise ModelLoadError(path, str(e)) from e
        problems = check_graph_against_spec(session, spec)
        if problems:
            raise ModelLoadError(path, "graph does not match its spec: " + "; ".join(problems))
        try:
            engine = cls(session, spec, path, hashlib.sha256(blob).hexdigest())
        except ExtraMissing as e:
            raise ModelLoadError(path, str(e)) from e
        engine.threads = threads
        log.info(
            "loaded model %s from %s (sha256 %s, %d thread(s))",
            spec.name,
            path,
            engine.sha256[:12],
            threads,
        )
        return engine

    # -- inference -----------------------------------------------------------------------

    def predict(self, sample: Sample, *, with_stats: bool = True) -> Prediction:
        """Preprocess as the spec says, run, decide; latency covers the whole call.

        ``with_stats=False`` leaves ``input_stats`` empty for an image model: image
        statistics cost about as much as the resize, and drift windows need far fewer
        samples than a camera's frame rate gives (the drift monitor skips empty stats).
        """
        start = time.perf_counter()
        x, stats = self._prepare(sample, with_stats)
        outputs = self.session.run(self._fetch, {self._input_name: x})
        if isinstance(stats, Future):
            stats = stats.result()
        label, confidence, scores = self._decide(np.asarray(outputs[0]))
        embedding = None
        if self.spec.embedding_output is not None:
            embedding = np.asarray(outputs[1], dtype=np.float32).reshape(-1).copy()
        latency_ms = (time.perf_counter() - start) * 1000.0
        self.latency.record(latency_ms)
        return Prediction(label, confidence, scores, latency_ms, embedding, stats)

    def run_raw(self, feeds: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Every graph output for ready-made feeds: for smoke tests and benchmarks."""
        results = self.session.run(None, feeds)
        return {name: np.asarray(v) for name, v in zip(self._output_names, results, strict=True)}

    def example_feeds(self) -> dict[str, npt.NDArray[Any]]:
        """A neutral input of the right shape (dynamic dims as 1), e.g. for a warm-up call."""
        feeds: dict[str, npt.NDArray[Any]] = {}
        for spec in self.spec.inputs:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
            feeds[spec.name] = np.zeros(shape, dtype=_NUMPY_DTYPES[spec.dtype])
        return feeds

    def warm_up(self) -> float:
        """Run once so the first real frame does not pay for lazy allocations; returns ms."""
        start = time.perf_counter()
        self.session.run(self._fetch, self.example_feeds())
        return (time.perf_counter() - start) * 1000.0

    def _prepare(
        self, sample: Sample, with_stats: bool = True
    ) -> tuple[npt.NDArray[Any], dict[str, float] | Future[dict[str, float]]]:
        pre = self.spec.preprocessing
        if isinstance(pre, ImagePreprocessing):
            assert self._prepare_image is not None and self._image_statistics is not None
            if sample.frame is None:
                raise InputError(f"sample {sample.input_id} has no frame for image model")
            frame = sample.frame
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise InputError(
                    f"sample {sample.input_id}: expected an HxWx3 uint8 BGR frame, "
                    f"got {frame.shape} {frame.dtype}"
                )
            # Drift statistics cost about as much as resizing for a small model; OpenCV and
            # onnxruntime release the GIL, so on a multi-core box they run alongside.
            stats: dict[str, float] | Future[dict[str, float]] = {}
            if with_stats:
                stats = _statistics_pool().submit(self._image_statistics, frame)
            x = self._prepare_image(frame, pre)
            return x.astype(self._input_dtype, copy=False), stats
        return self._prepare_row(sample, pre)

    def _prepare_row(
        self, sample: Sample, pre: TabularPreprocessing
    ) -> tuple[npt.NDArray[Any], dict[str, float]]:
        if sample.features is None:
            raise InputError(f"sample {sample.input_id} has no features for tabular model")
        missing = [n for n in pre.features if n not in sample.features]
        if missing:
            raise InputError(f"sample {sample.input_id} lacks feature(s) {', '.join(missing)}")
        row = {n: float(sample.features[n]) for n in pre.features}
        bad = [n for n, v in row.items() if not math.isfinite(v)]
        if bad:
            raise InputError(f"sample {sample.input_id} has non-finite feature(s) {', '.join(bad)}")
        x = np.fromiter(row.values(), dtype=np.float64, count=len(row))
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / np.where(self._std == 0, 1.0, self._std)
        return x.astype(self._input_dtype)[np.newaxis, :], row

    def _decide(self, raw: npt.NDArray[Any]) -> tuple[str, float, dict[str, float]]:
        labels = self.spec.labels
        probs = raw.astype(np.float64).reshape(-1)
        if probs.size == 1 and len(labels) == 2:
            # A single sigmoid unit: the probability of the positive (else the second) label.
            unit = self.spec.positive_label or labels[1]
            other = labels[0] if unit == labels[1] else labels[1]
            p = float(probs[0])
            scores = {other: 1.0 - p, unit: p}
        elif probs.size == len(labels):
            scores = {label: float(p) for label, p in zip(labels, probs, strict=True)}
        else:
            raise OutputError(
                f"{self.spec.probabilities_output} has {probs.size} values for {len(labels)} labels"
            )
        if not all(math.isfinite(v) for v in scores.values()):
            raise OutputError(f"{self.spec.probabilities_output} is not finite: {scores}")
        label, confidence = self.spec.decide(scores)
        return label, confidence, scores

    def __repr__(self) -> str:
        return f"InferenceEngine({self.spec.name!r}, {self.path}, sha256={self.sha256[:12]})"
