"""Weather evaluation speed (10,000 rows) against a raw read+infer baseline; optional training time.

Usage:
    .venv/bin/python -m benchmarks.bench_weather [--model ONNX] [--data CSV] [--rows 10000]
        [--train-full]

Without ``--model`` a quick model is trained on the shipped sample first (not timed). The
raw baseline is what any evaluation must at least do: ``pandas.read_csv`` of the same file
and one onnxruntime call on an already-built float32 matrix. ``--train-full`` also times
``cloud-trainer weather train`` on the full data (minutes).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_first_rows(src: Path, dst: Path, n: int) -> Path:
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", newline="") as f:
        reader = csv.reader(f)
        rows = [next(reader) for _ in range(n + 1)]
    with dst.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return dst


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-full", action="store_true")
    args = parser.parse_args()

    import onnxruntime as ort
    import pandas as pd

    from cloud_trainer.weather.pipeline import train_weather
    from cloud_trainer.weather.scoring import evaluate_csv
    from cloud_trainer.weather.settings import TrainSettings, default_data_path, sample_path
    from edge_agent.features.weather import FEATURE_NAMES

    tmp = Path(tempfile.mkdtemp(prefix="bench-weather-"))
    data = args.data or default_data_path()[0]
    model = args.model
    if model is None:
        outcome = train_weather(
            TrainSettings(data=sample_path(), quick=True, work_dir=tmp, register_model=False)
        )
        model = outcome.export.path
    csv_path = write_first_rows(data, tmp / "rows.csv", args.rows)

    evaluate_s = timed(lambda: evaluate_csv(csv_path, model), args.repeats)
    result, _ = evaluate_csv(csv_path, model)

    matrix = np.random.default_rng(0).normal(size=(args.rows, len(FEATURE_NAMES)))
    matrix = matrix.astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def raw() -> None:
        pd.read_csv(csv_path)
        session.run(None, {name: matrix})

    raw_s = timed(raw, args.repeats)
    print(f"data: {data} (first {args.rows} rows), model: {model}")
    print(f"evaluate {args.rows} rows: {evaluate_s:.3f} s (median of {args.repeats}); goal < 10 s")
    print(f"  scored rows {result['n_rows']}, accuracy {result['accuracy']:.4f}")
    print(f"raw baseline (read_csv + one onnxruntime call): {raw_s:.3f} s")
    print(f"ratio evaluate / raw: {evaluate_s / raw_s:.1f}x")
    print(f"throughput: {args.rows / evaluate_s:,.0f} rows/s")

    if args.train_full:
        store = tmp / "mlflow"
        cmd = [sys.executable, "-m", "cloud_trainer", "weather", "train", "--data", str(data)]
        cmd += ["--store", str(store), "--work-dir", str(tmp / "full")]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
        train_s = time.perf_counter() - start
        print(f"full training (cloud-trainer weather train): {train_s:.0f} s; goal < 600 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
