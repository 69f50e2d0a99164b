"""The camera agent's whole per-frame path against a bare prepare+run loop, same model, one run.

    .venv/bin/python -m benchmarks.bench_camera_path [--model catdog-int8.onnx]
        [--seconds 20] [--json OUT]

``agent`` is ``EdgeAgent.handle_sample`` with the services a camera runs: the no_pet decision
from the model's presence rule, the visit tracker (visits start and end, snapshots encoded
on its worker), the drift monitor (image statistics on its stride, embedding and confidence
windows on pet frames), per-frame predictions as ``pets_only`` queued in the SQLite outbox.
``bare`` is the least any loop must do to get an answer from a frame: ``prepare_image`` then
``session.run`` on the probabilities. Calls alternate, frame by frame, so a busy neighbour
slows both alike; the ratio is agent frames/s over bare frames/s (goal >= 0.9).

Frames: a park stream of 640x480 frames, stretches of empty scenes (``../shared/data/scenes``
or the shipped ``none/`` photos) between pet visits, time-stamped at 5 frames/s so visits
start and end as on a camera. Without ``--model`` a quick model is trained on the shipped
sample first (about a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from edge_agent.config.device import DeviceConfig
from edge_agent.drift.service import DriftService
from edge_agent.features.image import prepare_image
from edge_agent.inference import InferenceEngine
from edge_agent.protocol.bundle import ImagePreprocessing
from edge_agent.runtime.agent import EdgeAgent
from edge_agent.sources import Sample
from edge_agent.visits.service import VisitService

ROOT = Path(__file__).resolve().parents[1]
FPS = 5.0
SIZE = (640, 480)


def park_stream(pets: Path, scenes: Path, n: int) -> list[np.ndarray]:
    """Stretches of 60 empty frames (12 s, longer than the default quiet time, so each visit
    ends), then 10 frames of one pet photo, repeated."""

    from cloud_trainer.catdog.ingest import KNOWN_MISLABELLED

    def load(paths: list[Path]) -> list[np.ndarray]:
        out = []
        for path in paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if image is not None and digest not in KNOWN_MISLABELLED:
                out.append(cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA))
        return out

    empty = load(sorted(scenes.glob("*.jpg")))
    animals = load([p for p in sorted(pets.glob("*/*.jpg")) if p.parent.name != "none"][::7])
    if not empty or not animals:
        raise SystemExit(f"no photos under {pets} or {scenes}")
    frames: list[np.ndarray] = []
    i = 0
    while len(frames) < n:
        frames += [empty[(i * 60 + k) % len(empty)] for k in range(60)]
        frames += [animals[i % len(animals)]] * 10
        i += 1
    return frames[:n]


def camera_agent(model: Path, work: Path) -> tuple[EdgeAgent, VisitService]:
    config = DeviceConfig.model_validate(
        {
            "device_id": "cam-bench",
            "site": "park",
            "kind": "camera",
            "source": {"type": "camera", "uri": str(work / "unused.avi")},
            "model": {"path": str(model), "version": 1},
            "broker": {"host": "127.0.0.1", "port": 1},
            "limits": {"outbox_path": str(work / "outbox.db")},
            "drift": {"enabled": True},
            "api": {"enabled": False},
        }
    )
    agent = EdgeAgent(config, InferenceEngine.load(model, threads=1), None)
    drift = DriftService(agent, config.drift, work) if config.drift else None
    if drift is not None:
        drift.attach()
    visits = VisitService(agent, config.visits, work, None).attach()
    return agent, visits


def run(model: Path, frames: list[np.ndarray], seconds: float, work: Path) -> dict[str, Any]:
    agent, visits = camera_agent(model, work)
    spec = agent.slot.current.spec
    pre = spec.preprocessing
    assert isinstance(pre, ImagePreprocessing), "a camera model takes images"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name, fetch = spec.inputs[0].name, [spec.probabilities_output]
    start = datetime.now(UTC)

    def sample(i: int) -> Sample:
        ts = start + timedelta(seconds=i / FPS)
        return Sample(ts=ts, input_id=f"frame-{i:06d}", frame=frames[i % len(frames)])

    bare_t: list[float] = []
    agent_t: list[float] = []
    published = 0
    i = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        session.run(fetch, {name: prepare_image(frame, pre)})
        t1 = time.perf_counter()
        seq = agent.handle_sample(sample(i))
        t2 = time.perf_counter()
        bare_t.append(t1 - t0)
        agent_t.append(t2 - t1)
        published += seq is not None
        i += 1
    visits.stop()
    counters = visits.visit_counters()
    bare_fps = len(bare_t) / sum(bare_t)
    agent_fps = len(agent_t) / sum(agent_t)
    return {
        "model": str(model),
        "frames": i,
        "bare_fps": bare_fps,
        "agent_fps": agent_fps,
        "ratio": agent_fps / bare_fps,
        "bare_p50_ms": float(np.median(bare_t) * 1000),
        "agent_p50_ms": float(np.median(agent_t) * 1000),
        "agent_p95_ms": float(np.percentile(agent_t, 95) * 1000),
        "predictions_published": published,
        "visits": counters.model_dump(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an ONNX camera model with a presence rule")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from cloud_trainer.catdog.cli import sample_path

    shared = ROOT.parent / "shared" / "data"
    pets = shared / "pets" if (shared / "pets").is_dir() else sample_path()
    scenes = shared / "scenes" if (shared / "scenes").is_dir() else sample_path() / "none"
    frames = park_stream(pets, scenes, 700)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from benchmarks.bench_catdog import quick_models

            model = quick_models(224, Path(tmp)) / "catdog-int8.onnx"
        out = run(model, frames, args.seconds, Path(tmp) / "agent")
    print(
        f"{out['frames']} frames: bare prepare+run {out['bare_fps']:.1f} fps "
        f"(p50 {out['bare_p50_ms']:.2f} ms), agent {out['agent_fps']:.1f} fps "
        f"(p50 {out['agent_p50_ms']:.2f} ms, p95 {out['agent_p95_ms']:.2f} ms): "
        f"ratio {out['ratio']:.3f} (goal >= 0.9, {'met' if out['ratio'] >= 0.9 else 'MISSED'})"
    )
    print(f"published {out['predictions_published']} pet predictions; visits {out['visits']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
