"""onnxruntime session options against memory and latency: what the engine's settings rest on.

    .venv/bin/python -m benchmarks.bench_ort_options [--model PATH ...] [--threads 1 2]
        [--rounds 3] [--seconds 3] [--json OUT]

Each variant runs in a fresh process (so one session's arena never flatters the next): it
creates the session as ``InferenceEngine.load`` does with one option changed, runs it 300
times, and reports the RSS it added from before the session to after those runs, then times
``session.run`` for ``--seconds`` (p50, p95). Variants: the engine's settings (CPU arena and
memory pattern on), no arena, no memory pattern, neither, no weight prepacking, initializers
from the device allocator, and graph optimisation EXTENDED or BASIC instead of ALL. Rounds
alternate the order of the variants; figures are medians over the rounds.

Without ``--model`` it times the test rain model and a synthetic model of a camera's cost
(224x224 input and two 512x512 MatMuls, ``tests.support.onnx_models``). docs/results.md also
has EfficientNet-Lite0 itself: ``build_lite0(224)`` from
``cloud_trainer.catdog.backbone.efficientnet_lite`` exported with ``tf2onnx.convert.from_keras``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "engine (arena + pattern)": {},
    "no arena": {"arena": False},
    "no memory pattern": {"pattern": False},
    "neither": {"arena": False, "pattern": False},
    "no prepacking": {"entries": {"session.disable_prepacking": "1"}},
    "initializers via device allocator": {
        "entries": {"session.use_device_allocator_for_initializers": "1"}
    },
    "optimisation EXTENDED": {"level": "ORT_ENABLE_EXTENDED"},
    "optimisation BASIC": {"level": "ORT_ENABLE_BASIC"},
}

# Runs in the child process: one session, one set of options.
CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0

path, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
variant = json.loads(sys.argv[4])
base = rss()
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
level = variant.get("level", "ORT_ENABLE_ALL")
options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
options.enable_cpu_mem_arena = variant.get("arena", True)
options.enable_mem_pattern = variant.get("pattern", True)
options.log_severity_level = 3
for key, value in variant.get("entries", {}).items():
    options.add_session_config_entry(key, value)
with open(path, "rb") as f:
    session = ort.InferenceSession(f.read(), options, providers=["CPUExecutionProvider"])
first = session.get_inputs()[0]
shape = [d if isinstance(d, int) and d > 0 else 1 for d in first.shape]
feeds = {first.name: np.random.default_rng(0).random(shape).astype(np.float32)}
for _ in range(300):
    session.run(None, feeds)
grown = rss() - base
times = []
end = time.perf_counter() + seconds
while time.perf_counter() < end and len(times) < 100_000:
    start = time.perf_counter()
    session.run(None, feeds)
    times.append(time.perf_counter() - start)
times.sort()
print(json.dumps({"rss_mib": grown, "p50_ms": 1e3 * times[len(times) // 2],
                  "p95_ms": 1e3 * times[int(len(times) * 0.95)]}))
"""


def measure(path: Path, threads: int, seconds: float, variant: dict[str, Any]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(threads), str(seconds), json.dumps(variant)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def bench(path: Path, threads: int, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(measure(path, threads, seconds, VARIANTS[name]))
    return {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="*", default=[])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        models = [(path.stem, path) for path in args.model]
        if not models:
            # Imported here: with --model the benchmark runs in a device venv (no onnx there).
            from tests.support.onnx_models import image_classifier, weather_classifier

            rain, camera = Path(folder) / "rain.onnx", Path(folder) / "camera-cost.onnx"
            weather_classifier(rain)
            image_classifier(camera, size=224, slow_matmuls=2)
            models = [("rain (test)", rain), ("camera-cost 224", camera)]
        print(
            f"{'model':<18} {'threads':>7} {'variant':<34} {'RSS MiB':>8} "
            f"{'p50 ms':>8} {'p95 ms':>8}"
        )
        for label, path in models:
            for threads in args.threads:
                result = bench(path, threads, args.rounds, args.seconds)
                figures[f"{label} x{threads}"] = result
                for name, f in result.items():
                    print(
                        f"{label:<18} {threads:>7} {name:<34} {f['rss_mib']:8.1f} "
                        f"{f['p50_ms']:8.3f} {f['p95_ms']:8.3f}"
                    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
