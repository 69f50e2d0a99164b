"""Verification and smoke test of a candidate model before it may serve a live frame."""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_agent.inference import InferenceEngine, InferenceError, ModelLoadError
from edge_agent.protocol.bundle import ImagePreprocessing, ModelSpec, TabularPreprocessing
from edge_agent.protocol.manifest import ReleaseManifest, TensorSpec
from edge_agent.protocol.messages import utc_now
from edge_agent.sources.sample import Sample
from edge_agent.updater.config import SmokeConfig
from edge_agent.updater.errors import SmokeTestError, VerificationError

log = logging.getLogger(__name__)

HASH_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _tensor_text(t: TensorSpec) -> str:
    return f"{t.name}:{t.dtype}{t.shape}"


def _same_tensors(
    kind: str, announced: Sequence[TensorSpec], actual: Sequence[TensorSpec]
) -> str | None:
    by_name = {t.name: t for t in actual}
    for want in announced:
        got = by_name.get(want.name)
        if got is None:
            return f"{kind} {want.name} announced by the release is not in the model"
        if got.dtype != want.dtype or got.shape != want.shape:
            return (
                f"{kind} {want.name} is {_tensor_text(got)} in the model, "
                f"{_tensor_text(want)} in the release"
            )
    return None


def contract_problem(candidate: ModelSpec, running: ModelSpec) -> str | None:
    """Why ``candidate`` cannot take over the inputs ``running`` is fed, or None."""
    if candidate.task != running.task:
        return f"task {candidate.task} differs from the running model's {running.task}"
    if set(candidate.labels) != set(running.labels):
        return f"labels {candidate.labels} differ from the running model's {running.labels}"
    new, old = candidate.preprocessing, running.preprocessing
    if new.kind != old.kind:
        return f"{new.kind} input cannot replace the running model's {old.kind} input"
    if isinstance(new, TabularPreprocessing) and isinstance(old, TabularPreprocessing):
        if new.feature_set != old.feature_set:
            return f"feature set {new.feature_set} differs from the running {old.feature_set}"
        missing = set(new.features) - set(old.features)
        if missing:
            return f"needs features the source does not provide: {sorted(missing)}"
    new_in, old_in = candidate.inputs[0], running.inputs[0]
    if new_in.dtype != old_in.dtype or len(new_in.shape) != len(old_in.shape):
        return (
            f"input {_tensor_text(new_in)} does not match the running model's "
            f"{_tensor_text(old_in)}"
        )
    return None


def verify_candidate(
    manifest: ReleaseManifest, path: Path, running: ModelSpec | None, threads: int
) -> InferenceEngine:
    """Hash, load and check a downloaded file against its release and the running model."""
    sha, size = file_sha256(path)
    if size != manifest.size:
        raise VerificationError(f"file has {size} bytes, the release announces {manifest.size}")
    if sha != manifest.sha256:
        raise VerificationError(
            f"sha256 mismatch: file is {sha[:16]}…, the release announces {manifest.sha256[:16]}…"
        )
    try:
        engine = InferenceEngine.load(path, threads)
    except ModelLoadError as e:
        raise VerificationError(f"model does not load: {e.problem}") from e
    if engine.sha256 != manifest.sha256:
        raise VerificationError("file changed while it was being loaded")
    spec = engine.spec
    if spec.name != manifest.model:
        raise VerificationError(f"file holds model {spec.name!r}, release is {manifest.model!r}")
    problem = _same_tensors("input", manifest.inputs, spec.inputs) or _same_tensors(
        "output", manifest.outputs, spec.outputs
    )
    if problem is None and running is not None:
        problem = contract_problem(spec, running)
    if problem is not None:
        raise VerificationError(problem)
    return engine


def synthetic_samples(spec: ModelSpec, count: int, seed: int = 0) -> list[Sample]:
    """Plausible inputs for a smoke test: noise frames, or rows around the training means."""
    rng = np.random.default_rng(seed)
    pre = spec.preprocessing
    now = utc_now()
    samples = []
    for i in range(count):
        if isinstance(pre, ImagePreprocessing):
            frame = rng.integers(0, 256, size=(pre.height + 16, pre.width + 24, 3), dtype=np.uint8)
            samples.append(Sample(ts=now, input_id=f"smoke-{i}", frame=frame))
            continue
        row: dict[str, float] = {}
        for name in pre.features:
            try:
                base = spec.drift.feature(name)
                row[name] = float(base.mean + base.std * rng.standard_normal())
            except KeyError:
                row[name] = float(rng.standard_normal())
        samples.append(Sample(ts=now, input_id=f"smoke-{i}", features=row))
    return samples


def smoke_test(engine: InferenceEngine, config: SmokeConfig) -> float:
    """Run synthetic inputs; raise SmokeTestError on a non-finite output or a slow model.

    Returns the median latency in ms. The first call is a warm-up and not timed, since
    onnxruntime allocates lazily.
    """
    spec = engine.spec
    samples = synthetic_samples(spec, config.samples + 1)
    try:
        engine.predict(samples[0])
        latencies = [engine.predict(sample).latency_ms for sample in samples[1:]]
        outputs = engine.run_raw(engine.example_feeds())
    except InferenceError as e:
        raise SmokeTestError(f"smoke input failed: {e}") from e
    except Exception as e:  # onnxruntime raises plain RuntimeError subclasses at run time
        raise SmokeTestError(f"smoke input failed in onnxruntime: {type(e).__name__}: {e}") from e
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise SmokeTestError(f"output {name} is not finite on a neutral input")
    median = statistics.median(latencies)
    budget = spec.latency_budget_ms * config.latency_budget_factor
    if median > budget:
        raise SmokeTestError(
            f"median latency {median:.1f} ms exceeds the budget of {budget:.1f} ms "
            f"({config.latency_budget_factor}× the spec's {spec.latency_budget_ms:.1f} ms)"
        )
    log.info(
        "smoke test of %s passed: median %.2f ms over %d inputs", spec.name, median, len(latencies)
    )
    return median
