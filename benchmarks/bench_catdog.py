"""Camera model latency: fp32 against static int8 on one thread, beside raw onnxruntime.

    .venv/bin/python -m benchmarks.bench_catdog [--models DIR ...] [--sizes 160 224]
        [--data ../shared/data/pets] [--seconds 4] [--rounds 4]

For each model folder (the ``--work-dir`` of ``cloud-trainer catdog train``, holding
``catdog-fp32.onnx`` and ``catdog-int8.onnx``) or, without ``--models``, for each of
``--sizes`` after a quick training run on the shipped sample (no registry), it times with
one onnxruntime thread:

- ``raw``: ``session.run`` on input tensors prepared beforehand: bare onnxruntime, the
  baseline every other figure is divided by;
- ``device``: ``edge_agent`` ``InferenceEngine.predict`` from the BGR frame (resize, run,
  decide, embedding copy; drift statistics off), which is what a camera pays per frame.

Rounds alternate fp32 and int8 so a noisy neighbour hurts both alike; the median and the
best round are printed, with int8/fp32 speed-ups and device/raw overheads. Size on disk and
test-split balanced accuracy (from the run's report.json) are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge_agent.features.image import prepare_image
from edge_agent.inference import InferenceEngine
from edge_agent.protocol.bundle import ImagePreprocessing
from edge_agent.sources import Sample

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "int8")


def load_frames(data: Path, count: int) -> list[np.ndarray]:
    frames = []
    for path in sorted(data.glob("*/*"))[::5]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            frames.append(image)
        if len(frames) == count:
            break
    if not frames:
        raise SystemExit(f"no photos under {data}")
    return frames


def quick_models(size: int, root: Path) -> Path:
    from cloud_trainer.catdog.cli import sample_path
    from cloud_trainer.catdog.pipeline import PipelineSettings, run_pipeline
    from cloud_trainer.catdog.train import TrainSettings

    work = root / f"catdog-{size}"
    print(f"training a quick {size}px model on the shipped sample into {work} ...", flush=True)
    run_pipeline(
        PipelineSettings(
            data=sample_path(),
            work_dir=work,
            train=TrainSettings(size=size, feature_views=1),
            calibration_images=32,
            register_model=False,
        )
    )
    return work


def ms_per_call(step: Callable[[int], object], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while True:
        step(n)
        n += 1
        if n % 4 == 0 and time.perf_counter() - start >= seconds:
            break
    return (time.perf_counter() - start) * 1000.0 / n


def steps_for(path: Path, frames: list[np.ndarray]) -> dict[str, Callable[[int], object]]:
    engine = InferenceEngine.load(path, threads=1)
    pre = engine.spec.preprocessing
    assert isinstance(pre, ImagePreprocessing)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = engine.spec.inputs[0].name
    tensors = [prepare_image(f, pre) for f in frames]
    samples = [
        Sample(ts=datetime.now(UTC), input_id=f"f{i}", frame=f) for i, f in enumerate(frames)
    ]
    k = len(frames)
    return {
        "raw": lambda i: session.run(None, {name: tensors[i % k]}),
        "device": lambda i: engine.predict(samples[i % k], with_stats=False),
    }


def bench_folder(
    folder: Path, frames: list[np.ndarray], seconds: float, rounds: int
) -> dict[str, float]:
    paths = {v: folder / f"catdog-{v}.onnx" for v in VARIANTS}
    steps = {v: steps_for(p, frames) for v, p in paths.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for variant in VARIANTS:  # warm-up
        for step in steps[variant].values():
            ms_per_call(step, 0.3)
    for _ in range(rounds):
        for variant in VARIANTS:
            for kind, step in steps[variant].items():
                times.setdefault((variant, kind), []).append(ms_per_call(step, seconds / rounds))
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    size = report.get("size", "?")
    print(f"\n{folder}  (input {size}px, 1 thread, {len(frames)} photos)")
    print(
        f"{'variant':<8} {'MB':>6} {'bal.acc':>8} {'raw ms':>8} {'best':>7} "
        f"{'device ms':>10} {'best':>7} {'device/raw':>11}"
    )
    for variant in VARIANTS:
        raw = times[(variant, "raw")]
        dev = times[(variant, "device")]
        acc = report.get(variant, {}).get("test", {}).get("balanced_accuracy")
        print(
            f"{variant:<8} {paths[variant].stat().st_size / 1e6:>6.2f} "
            f"{'-' if acc is None else f'{acc:.4f}':>8} {statistics.median(raw):>8.2f} "
            f"{min(raw):>7.2f} {statistics.median(dev):>10.2f} {min(dev):>7.2f} "
            f"{statistics.median(dev) / statistics.median(raw):>11.3f}"
        )
    for kind in ("raw", "device"):
        fp32 = statistics.median(times[("fp32", kind)])
        int8 = statistics.median(times[("int8", kind)])
        print(f"int8 speed-up ({kind}): {fp32 / int8:.2f}x  ({fp32:.2f} -> {int8:.2f} ms/frame)")
    return {f"{v}/{k}_ms": statistics.median(t) for (v, k), t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="*", help="train --work-dir folders")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pets")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0, help="per variant and loop")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    if not args.data.is_dir():
        from cloud_trainer.catdog.cli import sample_path

        args.data = sample_path()
    frames = load_frames(args.data, args.frames)
    with tempfile.TemporaryDirectory(prefix="bench-catdog-") as tmp:
        folders = args.models or [quick_models(size, Path(tmp)) for size in args.sizes]
        figures = {str(f): bench_folder(f, frames, args.seconds, args.rounds) for f in folders}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
