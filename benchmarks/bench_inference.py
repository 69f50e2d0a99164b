"""Engine overhead: raw ``session.run`` frames/s against ``InferenceEngine.predict`` frames/s.

    .venv/bin/python -m benchmarks.bench_inference [--data ../shared/data] [--seconds 3]
        [--model PATH] [--threads 1 2]

Same model, same frames, same thread settings, measured in one run. Two raw loops: ``run``
feeds tensors prepared beforehand (pure inference, the strictest figure) and ``prep+run``
calls ``prepare_image`` then ``session.run`` per frame (the least any loop must do to get a
prediction from a frame). ``predict`` starts from the BGR frame and does everything the
agent needs: resize and normalise as the spec says, run, decide, embedding copy, image
statistics for drift (overlapped with inference on a helper thread), latency bookkeeping;
``no-stats`` is ``predict(..., with_stats=False)``, for frames the drift monitor does not
need. Target: engine >= 0.9 x raw for a model of realistic cost.

Models: without ``--model``, two synthetic ones from ``tests.support.onnx_models`` are
timed: ``tiny`` (a mean-colour classifier, microseconds: overhead dominates, shown for
honesty) and ``lite0-cost`` (224x224 input plus two 512x512x512 MatMuls, about the
compute of EfficientNet-Lite0, the camera model's backbone). Frames are the pet photos at
their own size (or generated 640x480 scenes without the shared data). The variants are
called one after another, call by call, so a busy neighbour slows them all alike; fps is
calls over the summed time of each variant, p50/p95 are the engine's per-call latencies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge_agent.features.image import prepare_image
from edge_agent.inference import InferenceEngine, ModelSlot
from edge_agent.protocol.bundle import ImagePreprocessing
from edge_agent.sources import Sample
from tests.support.media import generated_frames
from tests.support.onnx_models import image_classifier

ROOT = Path(__file__).resolve().parents[1]


def load_frames(data: Path, count: int) -> list[np.ndarray]:
    pets = data / "pets"
    frames: list[np.ndarray] = []
    for path in sorted(pets.glob("*/*"))[::7]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            frames.append(image)
        if len(frames) == count:
            return frames
    return frames or generated_frames(count, (640, 480))


def raw_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved(steps: list[Callable[[int], object]], seconds: float) -> list[list[float]]:
    """Per-call times (s) of each step, calls interleaved one by one in rotating order.

    A shared, busy machine slows whichever loop runs while a neighbour is busy; interleaving
    every call spreads that noise evenly over all the variants being compared.
    """
    times: list[list[float]] = [[] for _ in steps]
    order = list(range(len(steps)))
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or i < 16:
        for j in order:
            t0 = time.perf_counter()
            steps[j](i)
            times[j].append(time.perf_counter() - t0)
        order = order[1:] + order[:1]
        i += 1
    return times


def bench_model(
    label: str, path: Path, frames: list[np.ndarray], threads: int, seconds: float
) -> tuple[float, float, float, float, float]:
    engine = InferenceEngine.load(path, threads=threads)
    # The agent's path with `drift.image_stats_every: 4`: statistics on one frame in four.
    slot = ModelSlot(engine, stats_every=4)
    pre = engine.spec.preprocessing
    assert isinstance(pre, ImagePreprocessing), "this benchmark times image models"
    session = raw_session(path, threads)
    name = engine.spec.inputs[0].name
    fetch = [engine.spec.probabilities_output]
    if engine.spec.embedding_output:
        fetch.append(engine.spec.embedding_output)
    tensors = [prepare_image(f, pre) for f in frames]
    samples = [
        Sample(ts=datetime.now(UTC), input_id=f"frame-{i:06d}", frame=f)
        for i, f in enumerate(frames)
    ]
    k = len(frames)

    def raw_step(i: int) -> object:
        return session.run(fetch, {name: tensors[i % k]})

    def raw_prepared_step(i: int) -> object:
        return session.run(fetch, {name: prepare_image(frames[i % k], pre)})

    def engine_step(i: int) -> object:
        return engine.predict(samples[i % k])

    def lean_step(i: int) -> object:
        return engine.predict(samples[i % k], with_stats=False)

    def every4_step(i: int) -> object:
        return slot.predict(samples[i % k])

    steps: list[Callable[[int], object]] = [
        raw_step,
        raw_prepared_step,
        engine_step,
        lean_step,
        every4_step,
    ]
    interleaved(steps, 0.5)  # warm-up: lazy allocations, caches, the statistics pool
    times = interleaved(steps, seconds)
    raw_fps, prep_fps, engine_fps, lean_fps, every4_fps = (len(t) / sum(t) for t in times)
    p50, p95 = np.percentile(np.asarray(times[2]) * 1000, [50, 95])
    print(
        f"{label:<12} {threads:>7} {raw_fps:>9.1f} {prep_fps:>9.1f} {engine_fps:>9.1f} "
        f"{lean_fps:>9.1f} {engine_fps / raw_fps:>8.3f} {engine_fps / prep_fps:>8.3f} "
        f"{lean_fps / prep_fps:>8.3f} {every4_fps / prep_fps:>8.3f} {p50:>7.2f} {p95:>7.2f}"
        f"  ({len(times[0])} calls each)"
    )
    return raw_fps, prep_fps, engine_fps, lean_fps, every4_fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=3.0, help="per model and setting")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, help="an ONNX file with an embedded spec")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    frames = load_frames(args.data, args.frames)
    h, w = frames[0].shape[:2]
    print(f"frames: {len(frames)} ({w}x{h} first), {args.seconds:.1f}s per measurement")
    with tempfile.TemporaryDirectory() as tmp:
        models: list[tuple[str, Path]] = []
        if args.model is not None:
            models.append((args.model.stem[:12], args.model))
        else:
            tiny, lite = Path(tmp) / "tiny.onnx", Path(tmp) / "lite0.onnx"
            image_classifier(tiny, size=32)
            image_classifier(lite, size=224, slow_matmuls=2)
            models += [("tiny", tiny), ("lite0-cost", lite)]
        print(
            f"{'model':<12} {'threads':>7} {'run fps':>9} {'prep+run':>9} {'engine':>9} "
            f"{'no-stats':>9} {'eng/run':>8} {'eng/prep':>8} {'lean/prp':>8} {'1in4/prp':>8} "
            f"{'p50 ms':>7} {'p95 ms':>7}"
        )
        figures = {}
        for label, path in models:
            for threads in args.threads:
                figures[(label, threads)] = bench_model(label, path, frames, threads, args.seconds)
    if args.json:
        names = ("run_fps", "prep_run_fps", "engine_fps", "no_stats_fps", "stats_1in4_fps")
        rows = {f"{m}/{t}": dict(zip(names, f, strict=True)) for (m, t), f in figures.items()}
        args.json.write_text(json.dumps(rows, indent=1))
    realistic = [f for (label, _t), f in figures.items() if label != "tiny"]
    if realistic:
        vs_run = min(e / r for r, _p, e, _l, _q in realistic)
        vs_prep = min(e / p for _r, p, e, _l, _q in realistic)
        lean = min(n / p for _r, p, _e, n, _q in realistic)
        quarter = min(q / p for _r, p, _e, _n, q in realistic)
        print(
            f"realistic-cost models, worst setting: engine/run {vs_run:.3f}, "
            f"engine/(prepare+run) {vs_prep:.3f}, engine without stats/(prepare+run) "
            f"{lean:.3f}, statistics on 1 frame in 4 {quarter:.3f}; target 0.9 against "
            f"prepare+run: every frame {'met' if vs_prep >= 0.9 else 'MISSED'}, "
            f"1 in 4 {'met' if quarter >= 0.9 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
