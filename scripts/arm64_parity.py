"""Each model on fixed input tensors, run by a device venv: the x86 one, then the arm64 rootfs's.

scripts/arm64_check.py writes the tensors on the host; feeding the very same tensors on both
sides separates the model's numerics (onnxruntime) from preprocessing (OpenCV's resize), which
the end-to-end `edge-agent run` comparison cannot tell apart. The camera frames are also
preprocessed here, with this side's OpenCV, for the caller to compare. Imports only what the
device venv has (numpy and edge-agent's own dependencies).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_agent.features.image import prepare_image
from edge_agent.inference import InferenceEngine
from edge_agent.protocol.bundle import ImagePreprocessing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=Path, required=True, help=".npz from arm64_check.py")
    parser.add_argument("--models", type=Path, required=True, help="folder of the .onnx files")
    parser.add_argument("--out", type=Path, required=True, help=".npz of the outputs")
    args = parser.parse_args(argv)
    data = np.load(args.tensors)
    runs = [key.removesuffix("/model") for key in data.files if key.endswith("/model")]
    results: dict[str, np.ndarray] = {}
    for run in runs:
        engine = InferenceEngine.load(args.models / str(data[f"{run}/model"]))
        feed, output = engine.spec.inputs[0].name, engine.spec.probabilities_output
        x = data[f"{run}/x"]
        # One sample per call, as the agent serves them.
        outputs = [engine.run_raw({feed: x[i : i + 1]})[output] for i in range(len(x))]
        results[f"{run}/probs"] = np.concatenate(outputs).astype(np.float32)
        pre = engine.spec.preprocessing
        if isinstance(pre, ImagePreprocessing) and "frames" in data.files:
            results[f"{run}/x_local"] = np.concatenate(
                [prepare_image(f, pre) for f in data["frames"]]
            )
    np.savez(args.out, **results)  # type: ignore[arg-type]  # numpy's stub: **kwds as bool
    return 0


if __name__ == "__main__":
    sys.exit(main())
