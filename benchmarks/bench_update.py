"""Model delivery over loopback: publish → serving, swap gaps, swap memory, rollback time.

Run: ``.venv/bin/python -m benchmarks.bench_update [--rounds 7]``. Starts a private
Mosquitto, the artefact server and an in-process device fed frames every 5 ms, and
prints each figure beside a raw baseline measured in the same run (HTTP fetch + session
load for delivery, a bare ``ModelSlot.swap`` for rollback, one session's RSS for memory,
the loop's own jitter for the output gap at each swap: a release's commit, and an operator
pin that loads a stored version and swaps it in).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from cloud_trainer.release.artefacts import ArtefactServer
from cloud_trainer.release.publisher import ReleaseChannel
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.inference import InferenceEngine, ModelSlot
from edge_agent.protocol import SigningKey, TopicTree, UpdateEvent, UpdateState
from edge_agent.updater.boot import ProvisionedModel
from edge_agent.updater.config import UpdaterConfig
from tests.integration.updater_device import Device
from tests.integration.updater_fixtures import catdog_manifest
from tests.support.onnx_models import image_classifier

FRAME_S = 0.005
PINS = 6  # operator pins after the releases: a stored version swapped in without probation
FIGURES: dict[str, str] = {}  # every printed row, for --json


class RssSampler:
    """Peak resident memory of this process, sampled every millisecond while running."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self.max_sessions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            if ticks % 20 == 0:
                live = sum(1 for o in gc.get_objects() if isinstance(o, InferenceEngine))
                self.max_sessions = max(self.max_sessions, live)
            ticks += 1
            time.sleep(0.001)

    def __enter__(self) -> RssSampler:
        self.start = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def session_memory(path: Path, tmp: Path) -> int:
    """RSS one more session of ``path`` costs: five held at once, after one-time set-up."""
    image_classifier(tmp / "tiny.onnx")
    InferenceEngine.load(tmp / "tiny.onnx").warm_up()
    base = psutil.Process().memory_info().rss
    held = [InferenceEngine.load(path) for _ in range(5)]
    for engine in held:
        engine.warm_up()
    cost = (psutil.Process().memory_info().rss - base) // len(held)
    del held
    return max(1, cost)


def raw_delivery_ms(url: str, workdir: Path) -> float:
    """The floor: fetch the file over HTTP and open one session, nothing checked."""
    start = time.perf_counter()
    target = workdir / "raw.onnx"
    with urllib.request.urlopen(url, timeout=10) as response:
        target.write_bytes(response.read())
    InferenceEngine.load(target).warm_up()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the printed rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp, MosquittoBroker() as broker:
        code = run(Path(tmp), BrokerEndpoint(broker.host, broker.port), args.rounds)
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=1, ensure_ascii=False))
    return code


def run(tmp: Path, endpoint: BrokerEndpoint, rounds: int) -> int:
    key = SigningKey.generate()
    key.save(tmp / "fleet.key", tmp / "fleet.pub")
    models = tmp / "src"
    # ~2 MB models (a 512x512 weight block): the size class of the goal (< 5 MB).
    for v in range(1, rounds + 2):
        image_classifier(models / f"v{v}.onnx", slow_matmuls=1, bias=0.01 * v)
    image_classifier(models / "bad.onnx", slow_matmuls=1, bias=20.0)
    size_mb = (models / "v2.onnx").stat().st_size / 1e6
    config = UpdaterConfig.model_validate(
        {
            "fleet_public_key": tmp / "fleet.pub",
            "models_dir": tmp / "device",
            "probation": {
                "mode": "shadow",
                "frames": 10,
                "min_samples_to_fail": 5,
                "shadow": True,
                "max_disagreement": 0.2,
            },
        }
    )
    one_session = session_memory(models / "v2.onnx", tmp)
    tree = TopicTree("bench")
    link = MqttLink(endpoint, client_id="bench-publisher")
    link.start()
    channel = ReleaseChannel(link, tree, key)
    with ArtefactServer(tmp / "artefacts") as server:
        device = Device(
            config,
            endpoint,
            "bench",
            provisioned=ProvisionedModel(models / "v1.onnx", 1),
            frame_s=FRAME_S,
        )
        marks: dict[tuple[str | None, UpdateState], float] = {}
        device.extra_hooks.append(
            lambda e: marks.setdefault((e.release_id, e.state), time.perf_counter())
        )
        device.start()
        time.sleep(0.5)

        def release(path: Path, version: int) -> tuple[str, float, str]:
            manifest = catdog_manifest(server, path, version)
            start = time.perf_counter()
            channel.publish(manifest)
            return manifest.release_id, start, manifest.urls[0]

        serve_ms, commit_ms, gaps, raw_ms, peaks, sessions = [], [], [], [], [], []
        for i in range(rounds):
            version = i + 2
            first = len(device.served)
            with RssSampler() as rss:
                release_id, start, url = release(models / f"v{version}.onnx", version)
                event = device.wait_for(
                    lambda e, r=release_id: e.release_id == r and e.state is UpdateState.COMMITTED,
                    30,
                )
            time.sleep(0.05)  # a few frames on the new model
            assert isinstance(event, UpdateEvent)
            # Shadow-first probation: the new model answers from the commit on.
            serve_ms.append((marks[(release_id, UpdateState.COMMITTED)] - start) * 1000)
            commit_ms.append((marks[(release_id, UpdateState.COMMITTED)] - start) * 1000)
            peaks.append(rss.peak - rss.start)
            sessions.append(rss.max_sessions)
            raw_ms.append(raw_delivery_ms(url, tmp))
            gaps.append(max_gap_frames(device, first))
        # Operator pins: a stored version is loaded and swapped in, with no probation.
        switch_gaps = []
        for k in range(PINS):
            first = len(device.served)
            result, detail = device.updater.command("pin", {"version": rounds + k % 2})
            assert result == "done", detail
            time.sleep(0.1)
            switch_gaps.append(max_gap_frames(device, first))
        device.updater.command("unpin")
        failed = sum(1 for s in device.served if not s.ok)
        steady_p99 = steady_gap_p99(device)

        # A flipped release: in shadow-first probation it is judged and rejected unheard.
        bad_sha = InferenceEngine.load(models / "bad.onnx").sha256
        bad_id, bad_start, _url = release(models / "bad.onnx", rounds + 2)
        device.wait_for(lambda e: e.release_id == bad_id and e.state is UpdateState.ROLLED_BACK, 30)
        shadow_verdict_ms = (marks[(bad_id, UpdateState.ROLLED_BACK)] - bad_start) * 1000
        shadow_answers = sum(1 for s in device.served if s.sha256 == bad_sha)
        slot = ModelSlot(device.slot.current)
        other = InferenceEngine.load(models / "v1.onnx")
        t = time.perf_counter()
        slot.swap(other, warm=False)
        raw_swap_us = (time.perf_counter() - t) * 1e6
        device.stop()

        # The same release in live probation (the model answers while it is judged).
        live_config = config.model_copy(
            update={
                "models_dir": tmp / "device-live",
                "probation": config.probation.model_copy(update={"mode": "live"}),
            }
        )
        live = Device(
            live_config,
            endpoint,
            "bench-live",
            provisioned=ProvisionedModel(models / "v1.onnx", 1),
            frame_s=FRAME_S,
        ).start()
        time.sleep(0.5)
        manifest = catdog_manifest(server, models / "bad.onnx", rounds + 2)
        ReleaseChannel(link, TopicTree("bench-live"), key).publish(manifest)
        live.wait_for(
            lambda e: e.release_id == manifest.release_id and e.state is UpdateState.ROLLED_BACK,
            30,
        )
        time.sleep(0.2)
        live_answers = sum(1 for s in live.served if s.sha256 == bad_sha)
        rollback_ms = rollback_latency_ms(live)
        live.stop()
    link.stop()

    p50 = statistics.median(serve_ms)
    raw_p50 = statistics.median(raw_ms)
    peak_delta = max(peaks)
    frames = config.probation.frames
    print(f"model {size_mb:.2f} MB, {rounds} rounds, a frame every {FRAME_S * 1000:.0f} ms")
    row(
        "publish → new model serving, p50", f"{p50:.1f} ms", f"goal ≤ 2000; max {max(serve_ms):.0f}"
    )
    row("publish → committed, p50", f"{statistics.median(commit_ms):.1f} ms", f"{frames} frames")
    row("raw: HTTP fetch + session load, p50", f"{raw_p50:.1f} ms", f"ratio {p50 / raw_p50:.1f}×")
    row(
        "output gap during swap, max",
        f"{max(gaps):.2f} frames",
        f"goal ≤ 1; median {statistics.median(gaps):.2f}; {failed} failed",
    )
    row(
        "output gap at an operator pin, max",
        f"{max(switch_gaps):.2f} frames",
        f"stored version loaded and swapped in; median {statistics.median(switch_gaps):.2f}",
    )
    row("raw: frame gap without swap, p99", f"{steady_p99:.2f} frames", "the loop's own jitter")
    row("live sessions during updates, max", f"{max(sessions)}", "goal ≤ 2")
    row("raw: one session's memory", f"{one_session / 1e6:.2f} MB", "five held, averaged")
    row("peak RSS growth in an update round", f"{peak_delta / 1e6:.1f} MB", "buffers + sessions")
    row("flipped release: answers it gave, shadow", f"{shadow_answers}", "probation mode shadow")
    row("flipped release: publish → rolled back", f"{shadow_verdict_ms:.0f} ms", "shadow")
    row("flipped release: answers it gave, live", f"{live_answers}", "probation mode live")
    row("rollback after failed probation (live)", f"{rollback_ms:.1f} ms", "goal ≤ 1000 ms")
    row("raw: bare ModelSlot.swap", f"{raw_swap_us:.1f} µs", "")
    return 0


def row(what: str, value: str, note: str) -> None:
    FIGURES[what] = value
    print(f"{what:<38} {value:>14}   {note}")


def max_gap_frames(device: Device, first: int = 0) -> float:
    """Largest interval between served frames around a swap among the frames served from
    index ``first`` on, in frame periods beyond one."""
    served = device.served[max(0, first - 1) :]
    steady = [b.at - a.at for a, b in itertools.pairwise(device.served[-200:])]
    period = statistics.median(steady) if steady else FRAME_S
    # Frames whose serving engine changes mark the swap; look at the intervals around it.
    worst = 0.0
    for a, b in itertools.pairwise(served):
        if a.sha256 != b.sha256:
            worst = max(worst, (b.at - a.at) / period - 1)
    return max(0.0, worst)


def steady_gap_p99(device: Device) -> float:
    """The same gap measure between frames served by one engine: the loop's own jitter."""
    served = device.served
    pairs = [(a, b) for a, b in itertools.pairwise(served) if a.sha256 == b.sha256]
    intervals = sorted(b.at - a.at for a, b in pairs)
    period = statistics.median(intervals)
    p99 = intervals[int(len(intervals) * 0.99)]
    return max(0.0, p99 / period - 1)


def rollback_latency_ms(device: Device) -> float:
    """From the live frame that tipped the verdict to the first frame on the old model again."""
    served = device.served
    bad = next(s.sha256 for s in reversed(served) if s.sha256 != served[-1].sha256)
    bad_frames = [i for i, s in enumerate(served) if s.sha256 == bad]
    # min_samples_to_fail = 5: the fifth disagreeing frame fails probation.
    tipping = served[bad_frames[4]].at
    back = next(s.at for s in served[bad_frames[-1] + 1 :])
    return (back - tipping) * 1000


if __name__ == "__main__":
    raise SystemExit(main())
