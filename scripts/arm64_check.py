"""Host half of scripts/check-arm64.sh: the same real models and inputs on x86 and on arm64.

``prepare`` trains the two real models (``cloud-trainer ... train --quick``), cuts the inputs
(consecutive hours of the real station CSV, a few real pet photos as a lossless video) and writes
one device YAML per run. ``serve`` starts a private Mosquitto on a free loopback port, runs
``edge-agent run --exit-at-end`` for each model with the host's device venv and then inside the
rootfs (the chroot shares the host network), collects the predictions from the broker and compares
them. Run by the dev venv's Python (cloud-trainer and paho are there); the comparison goes to a
JSON file that the shell script folds into its one-line result.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.features.image import prepare_image
from edge_agent.inference import InferenceEngine
from edge_agent.protocol.bundle import ImagePreprocessing
from edge_agent.sources import SourceClosed
from edge_agent.sources.csv_replay import CsvReplaySource, CsvReplaySourceConfig

log = logging.getLogger("arm64-check")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "cloud-trainer" / "src" / "cloud_trainer" / "samples"
FP32_TOLERANCE = 1e-4
# End to end, OpenCV's resize may round an input value differently on arm64 (±1 of 255), which
# moves a camera score by ~1e-3; that is reported, and ten times it fails.
PIPELINE_TOLERANCE = 1e-2
WEATHER_HOURS = 36  # consecutive real hours replayed; the first ones only fill the feature history
PHOTOS_PER_CLASS = 2  # each costs seconds of EfficientNet-Lite0 under emulation
CAMERA_SIZE = "160"  # the smaller of the trainer's two input sizes keeps emulated work small
FRAME_SIZE = (320, 240)  # all frames of a video share one size
AGENT_TIMEOUT_S = 600
SITE = "arm64check"


@dataclass(frozen=True)
class Run:
    """One agent run: which model, which input, and whether its scores must match to 1e-4."""

    name: str
    kind: str
    model: str
    precision: str  # "fp32": scores within FP32_TOLERANCE; "int8": labels equal


RUNS = [
    Run("weather", "weather", "models/weather.onnx", "fp32"),
    Run("camera-fp32", "camera", "models/catdog-fp32.onnx", "fp32"),
    Run("camera-int8", "camera", "models/catdog-int8.onnx", "int8"),
]


def _timed(what: str, started: float) -> float:
    took = time.monotonic() - started
    log.info("%s took %.1f s", what, took)
    return round(took, 1)


# -- prepare ------------------------------------------------------------------------------


def _train(argv: list[str], work: Path) -> None:
    cmd = [sys.executable, "-m", "cloud_trainer", *argv, "--quick", "--no-register"]
    cmd += ["--work-dir", str(work)]
    log.info("training: %s", " ".join(cmd[2:]))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(argv[:2])} failed: " + " / ".join(tail))


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one {pattern} in {folder}, found {len(found)}")
    return found[0]


def _station_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``WEATHER_HOURS`` consecutive rows (time order) from the middle of the real history."""
    with gzip.open(csv_path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    dated = []
    for row in rows:
        try:
            dated.append((datetime.fromisoformat(row["Timestamp"]), row))
        except (KeyError, ValueError):
            continue
    dated.sort(key=lambda pair: pair[0])
    # From the middle on, the first day-aligned window with clear as well as wet hours, so
    # both labels are likely to be predicted.
    for start in range(len(dated) // 2, len(dated) - WEATHER_HOURS, 24):
        window = [row for _, row in dated[start : start + WEATHER_HOURS]]
        if sum(row.get("Weather_conditions") == "clear" for row in window) >= WEATHER_HOURS // 4:
            return header, window
    return header, [row for _, row in dated[-WEATHER_HOURS:]]


def _pet_frames(pets: Path) -> tuple[list[str], list[Any]]:
    """The first photos per class that decode as colour images, resized to one frame size."""
    names: list[str] = []
    frames: list[Any] = []
    for label in ("cat", "dog"):
        taken = 0
        for photo in sorted((pets / label).iterdir()):
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if image is None or photo.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
                continue
            frames.append(cv2.resize(image, FRAME_SIZE, interpolation=cv2.INTER_AREA))
            names.append(f"{label}/{photo.name}")
            taken += 1
            if taken == PHOTOS_PER_CLASS:
                break
    return names, frames


def _write_video(path: Path, frames: list[Any]) -> None:
    # FFV1 is lossless: both machines decode exactly the pixels written here.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), 5.0, FRAME_SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with FFV1")
    for frame in frames:
        writer.write(frame)
    writer.release()


def _write_tensors(work: Path) -> None:
    """The input tensors both sides' parity step is fed, made once here the agent's way."""
    capture = cv2.VideoCapture(str(work / "inputs/pets.mkv"), cv2.CAP_FFMPEG)
    frames: list[Any] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    arrays: dict[str, Any] = {"frames": np.stack(frames)}
    for run in RUNS:
        engine = InferenceEngine.load(work / run.model)
        pre = engine.spec.preprocessing
        if isinstance(pre, ImagePreprocessing):
            x = np.concatenate([prepare_image(frame, pre) for frame in frames])
        else:
            config = CsvReplaySourceConfig(type="csv_replay", path=work / "inputs/station.csv")
            source = CsvReplaySource(config)
            rows = []
            try:
                while True:
                    sample = source.read(1.0)
                    if sample is not None:
                        rows.append(engine._prepare(sample)[0])  # the agent's own feature row
            except SourceClosed:
                pass
            x = np.concatenate(rows)
        arrays[f"{run.name}/x"] = x
        arrays[f"{run.name}/model"] = np.array(Path(run.model).name)
    np.savez(work / "inputs/tensors.npz", **arrays)


def _config(run: Run, base: Path, side: str, port: int) -> dict[str, Any]:
    source: dict[str, Any]
    if run.kind == "weather":
        source = {"type": "csv_replay", "path": str(base / "inputs/station.csv"), "order": "time"}
    else:
        source = {
            "type": "camera",
            "uri": str(base / "inputs/pets.mkv"),
            "pace": "fast",
            "fps": 30,
            "on_end": "close",
            "motion": {"enabled": False},
        }
    return {
        "device_id": f"{side}-{run.name}",
        "site": SITE,
        "kind": run.kind,
        "source": source,
        "model": {"path": str(base / run.model), "version": 1},
        "broker": {"host": "127.0.0.1", "port": port},
        "limits": {
            "outbox_path": str(base / f"outbox/{side}-{run.name}.db"),
            "telemetry_interval_s": 3600,
            "flush_timeout_s": 60,
        },
        "api": {"enabled": False},
        "logging": {"level": "WARNING"},
    }


def prepare(work: Path, data: Path) -> dict[str, Any]:
    """Models, inputs and the manifest ``serve`` reads; returns what was used."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    _train(
        ["weather", "train", "--data", str(SAMPLES / "weather/weather_sample.csv.gz")],
        work / "train-weather",
    )
    _train(
        ["catdog", "train", "--data", str(SAMPLES / "pets"), "--size", CAMERA_SIZE],
        work / "train-catdog",
    )
    _one(work / "train-weather", "*.onnx").replace(models / "weather.onnx")
    _one(work / "train-catdog", "catdog-fp32.onnx").replace(models / "catdog-fp32.onnx")
    _one(work / "train-catdog", "catdog-int8.onnx").replace(models / "catdog-int8.onnx")
    timings["train_models_s"] = _timed("training both models (x86)", started)

    started = time.monotonic()
    inputs = work / "inputs"
    inputs.mkdir(exist_ok=True)
    station = data / "weather" / "weather_dataset_raw.csv.gz"
    pets = data / "pets"
    if not station.is_file():
        station = SAMPLES / "weather" / "weather_sample.csv.gz"
    if not pets.is_dir():
        pets = SAMPLES / "pets"
    header, rows = _station_rows(station)
    with (inputs / "station.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    names, frames = _pet_frames(pets)
    _write_video(inputs / "pets.mkv", frames)
    _write_tensors(work)
    shutil.copy(ROOT / "scripts" / "arm64_parity.py", work / "arm64_parity.py")
    timings["inputs_s"] = _timed("cutting the inputs", started)
    manifest = {
        "station_csv": str(station),
        "hours": [rows[0]["Timestamp"], rows[-1]["Timestamp"]] if rows else [],
        "photos": [str(pets / n) for n in names],
        "camera_size": int(CAMERA_SIZE),
        "timings": timings,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# -- serve --------------------------------------------------------------------------------


class PredictionCollector:
    """Every prediction message on the broker, by device id then input id."""

    def __init__(self, host: str, port: int) -> None:
        self.by_device: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="arm64-check")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"collector could not subscribe on {host}:{port}")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(f"+/{SITE}/#", qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if data.get("type") != "prediction":
            return
        with self._lock:
            self.by_device.setdefault(data["device_id"], {})[data["input_id"]] = data

    def count(self, device: str) -> int:
        with self._lock:
            return len(self.by_device.get(device, {}))

    def settle(self, device: str, quiet_s: float = 1.0) -> dict[str, dict[str, Any]]:
        """Wait until no new prediction came for ``quiet_s``: the agent flushed before it exited."""
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet_s:
            now = self.count(device)
            if now != last:
                last, since = now, time.monotonic()
            time.sleep(0.1)
        with self._lock:
            return dict(self.by_device.get(device, {}))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _run(cmd: list[str], what: str, timeout: float = AGENT_TIMEOUT_S) -> str:
    """Its stdout; a failure raises with the last lines of both streams."""
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{what}: no result within {timeout:.0f} s") from e
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        tail = " / ".join(output.splitlines()[-6:])
        raise RuntimeError(f"{what} exited {done.returncode}: {tail}")
    _timed(what, started)
    return done.stdout


def _compare(
    run: Run, host: dict[str, dict[str, Any]], device: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    common = sorted(set(host) & set(device))
    diff = 0.0
    labels_equal = bool(common) and set(host) == set(device)
    for key in common:
        h, d = host[key], device[key]
        labels_equal = labels_equal and h["label"] == d["label"]
        for label, score in h["scores"].items():
            diff = max(diff, abs(float(score) - float(d["scores"].get(label, float("inf")))))
    return {
        "precision": run.precision,
        "predictions_host": len(host),
        "predictions_device": len(device),
        "pipeline_max_abs_diff": diff,
        "labels_equal": labels_equal,
        "labels": dict(Counter(host[k]["label"] for k in common)),
        "device_latency_ms_mean": round(
            sum(device[k]["latency_ms"] for k in common) / max(1, len(common)), 1
        ),
        "host_latency_ms_mean": round(
            sum(host[k]["latency_ms"] for k in common) / max(1, len(common)), 2
        ),
    }


def _parity(host_npz: Path, device_npz: Path) -> dict[str, dict[str, Any]]:
    """Per run: the models' output difference on identical tensors, and the preprocessing's."""
    host, device = np.load(host_npz), np.load(device_npz)
    found: dict[str, dict[str, Any]] = {}
    for run in RUNS:
        probs = f"{run.name}/probs"
        entry: dict[str, Any] = {
            "model_max_abs_diff": float(np.abs(host[probs] - device[probs]).max()),
            "model_argmax_equal": bool(
                (host[probs].argmax(axis=-1) == device[probs].argmax(axis=-1)).all()
            ),
        }
        local = f"{run.name}/x_local"
        if local in host.files:
            delta = np.abs(host[local] - device[local])
            entry["preprocess_values_differing"] = round(float((delta > 0).mean()), 4)
            entry["preprocess_max_diff"] = float(delta.max())
        found[run.name] = entry
    return found


def serve(
    work: Path, device_work: Path, host_agent: Path, device_prefix: list[str], machine: str
) -> dict[str, Any]:
    """Both sides on one broker; the verdict with per-run details and timings."""
    timings: dict[str, float] = {}
    broker = MosquittoBroker(workdir=work / "mosquitto")
    broker.start()
    collector: PredictionCollector | None = None
    try:
        collector = PredictionCollector(broker.host, broker.port)
        configs = work / "configs"
        configs.mkdir(exist_ok=True)
        (work / "outbox").mkdir(exist_ok=True)
        for run in RUNS:
            for side, base in (("x86", work), ("a64", device_work)):
                path = configs / f"{side}-{run.name}.yaml"
                path.write_text(yaml.safe_dump(_config(run, base, side, broker.port)))

        def device(*argv: str) -> list[str]:
            return [*device_prefix, *argv]

        started = time.monotonic()
        info = json.loads(
            _run(
                device(
                    "python",
                    "-c",
                    "import json, platform, onnxruntime, numpy, cv2; print(json.dumps({"
                    "'machine': platform.machine(), 'libc': '-'.join(platform.libc_ver()), "
                    "'python': platform.python_version(), 'onnxruntime': onnxruntime.__version__, "
                    "'numpy': numpy.__version__, 'opencv': cv2.__version__}))",
                ),
                "device python: imports",
            ).splitlines()[-1]
        )
        timings["device_imports_s"] = round(time.monotonic() - started, 1)
        if info["machine"] != machine:
            raise RuntimeError(f"the rootfs Python reports {info['machine']}, not {machine}")

        started = time.monotonic()
        doctor = _run(
            device(
                "edge-agent", "doctor", "--config", str(device_work / "configs/a64-weather.yaml")
            ),
            "edge-agent doctor (arm64)",
        )
        timings["doctor_s"] = round(time.monotonic() - started, 1)

        started = time.monotonic()

        def parity_args(base: Path, side: str) -> list[str]:
            return [
                str(base / "arm64_parity.py"),
                *("--tensors", str(base / "inputs/tensors.npz"), "--models", str(base / "models")),
                *("--out", str(base / f"parity-{side}.npz")),
            ]

        host_python = host_agent.parent / "python"
        _run([str(host_python), *parity_args(work, "x86")], "model parity (x86)")
        _run(device("python", *parity_args(device_work, "a64")), "model parity (arm64)")
        parity = _parity(work / "parity-x86.npz", work / "parity-a64.npz")
        timings["parity_s"] = round(time.monotonic() - started, 1)

        results: dict[str, Any] = {}
        for run in RUNS:
            started = time.monotonic()
            _run(
                [
                    str(host_agent),
                    "run",
                    "--exit-at-end",
                    "--config",
                    str(configs / f"x86-{run.name}.yaml"),
                ],
                f"edge-agent run {run.name} (x86)",
            )
            host = collector.settle(f"x86-{run.name}")
            timings[f"x86_{run.name}_s"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            _run(
                device(
                    "edge-agent",
                    "run",
                    "--exit-at-end",
                    "--config",
                    str(device_work / f"configs/a64-{run.name}.yaml"),
                ),
                f"edge-agent run {run.name} (arm64)",
            )
            on_device = collector.settle(f"a64-{run.name}")
            timings[f"arm64_{run.name}_s"] = round(time.monotonic() - started, 1)
            results[run.name] = _compare(run, host, on_device) | parity[run.name]
            log.info("%s: %s", run.name, json.dumps(results[run.name]))
    finally:
        if collector is not None:
            collector.close()
        broker.close()

    return _verdict(results) | {
        "arch": info["machine"],
        "device": info,
        "predictions": sum(r["predictions_device"] for r in results.values()),
        "runs": results,
        "doctor": [line for line in doctor.splitlines() if line.startswith(("ok ", "FAIL"))],
        "timings": timings,
    }


def _verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Passed only when the models agree on identical tensors and every label agrees."""
    by_precision: dict[str, list[dict[str, Any]]] = {"fp32": [], "int8": []}
    for entry in results.values():
        by_precision[entry["precision"]].append(entry)
    fp32, int8 = by_precision["fp32"], by_precision["int8"]
    max_abs_diff = max(r["model_max_abs_diff"] for r in fp32)
    pipeline = max(r["pipeline_max_abs_diff"] for r in fp32)
    labels_equal = all(r["labels_equal"] and r["model_argmax_equal"] for r in results.values())
    preprocess = max(r.get("preprocess_values_differing", 0.0) for r in results.values())
    problems, notes = [], []
    if max_abs_diff > FP32_TOLERANCE:
        problems.append(
            f"fp32 model outputs on identical tensors differ by {max_abs_diff:.3g} "
            f"(> {FP32_TOLERANCE:g})"
        )
    if not labels_equal:
        problems.append("labels or the set of predicted inputs differ between x86 and arm64")
    if pipeline > FP32_TOLERANCE and not preprocess:
        problems.append(
            f"end-to-end fp32 scores differ by {pipeline:.3g} with identical preprocessing"
        )
    elif pipeline > PIPELINE_TOLERANCE:
        problems.append(
            f"end-to-end fp32 scores differ by {pipeline:.3g} (> {PIPELINE_TOLERANCE:g})"
        )
    elif pipeline > FP32_TOLERANCE:
        notes.append(
            f"end to end (edge-agent run) fp32 scores differ by up to {pipeline:.3g}: OpenCV's "
            f"resize rounds {preprocess:.0%} of the camera input values differently on arm64 "
            f"(by 1 of 255); on identical tensors the models agree within {max_abs_diff:.2g}"
        )
    return {
        "status": "failed" if problems else "passed",
        "reason": "; ".join(problems) or None,
        "notes": notes,
        "max_abs_diff": max_abs_diff,
        "pipeline_max_abs_diff": pipeline,
        "int8_max_abs_diff": max(r["model_max_abs_diff"] for r in int8),
        "int8_pipeline_max_abs_diff": max(r["pipeline_max_abs_diff"] for r in int8),
        "preprocess_values_differing": preprocess,
        "labels_equal": labels_equal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare")
    prep.add_argument("--work", type=Path, required=True)
    prep.add_argument("--data", type=Path, required=True)
    srv = sub.add_parser("serve")
    srv.add_argument("--work", type=Path, required=True, help="the work folder, host path")
    srv.add_argument("--device-work", type=Path, required=True, help="the same folder, rootfs path")
    srv.add_argument("--host-agent", type=Path, required=True, help="x86 device venv's edge-agent")
    srv.add_argument("--device-prefix", required=True, help="JSON list: runs argv in the rootfs")
    srv.add_argument("--out", type=Path, required=True)
    srv.add_argument("--machine", default="aarch64", help="what the rootfs Python must report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if args.command == "prepare":
            prepare(args.work, args.data)
            return 0
        prefix = json.loads(args.device_prefix)
        verdict = serve(args.work, args.device_work, args.host_agent, prefix, args.machine)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        verdict = {"status": "failed", "reason": str(e)}
        if args.command == "prepare":
            log.error("prepare failed: %s", e)
            return 1
    args.out.write_text(json.dumps(verdict, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
