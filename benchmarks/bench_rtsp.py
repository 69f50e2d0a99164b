"""RTSP camera watchdog against a real RTSP/H.264 server: detection, recovery and open times.

    .venv/bin/python -m benchmarks.bench_rtsp [--repeats 5] [--outage-s 2] [--json OUT]

GStreamer's RTSP server (tests/support/rtsp_server.py, the system python3 with gi) streams a
generated 320x240 H.264 clip at 15 fps on loopback. Each repetition, with the camera source at
its default config (stall_timeout_s 4, timeout_s 10, backoff 0.5 s to 30 s):

- dead: the server is killed (SIGKILL) → seconds until the source reports ``lost``;
- back after dead: the server stays down ``--outage-s``, starts on the same port → seconds
  from it listening to the first sample (includes the wait the backoff has reached);
- frozen: the server is stopped (SIGSTOP) → seconds until ``frozen``;
- back after frozen: ``--outage-s`` later it continues (SIGCONT) → seconds to the first sample;
- open: bare OpenCV opens, interleaved, with its defaults, with the commonly advised
  ``rtsp_transport;tcp|fflags;nobuffer|flags;low_delay``, and with the source's options;
  open and first frame timed apart, as the first frame is what a reconnect waits for.

Goals: dead <= 3 s, frozen <= 5 s, back <= 2 s. Medians over the repetitions, worst beside.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from edge_agent.sources import CameraSourceConfig
from edge_agent.sources.camera import FAST_START_OPTIONS, OPTIONS_ENV, CameraSource
from tests.support.rtsp_server import RtspServer, h264_clip, rtsp_unavailable

FIGURES: dict[str, dict[str, float | None]] = {}  # every printed row, for --json
OPEN_VARIANTS = {
    "opencv defaults": None,
    "tcp + nobuffer + low_delay": "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay",
    "source (tcp + probesize 32 + low_delay)": f"rtsp_transport;tcp|{FAST_START_OPTIONS}",
}
GOALS = {"dead → lost": 3.0, "frozen → frozen event": 5.0}
LIMIT_S = 30.0  # a figure not reached within this is reported as missing


def until(source: CameraSource, done: Callable[[], bool], limit: float = LIMIT_S) -> float | None:
    """Seconds of reading until ``done``; None when it did not happen within ``limit``."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > limit:
            return None
        source.read(0.05)
    return time.monotonic() - start


def first_sample(source: CameraSource, limit: float = LIMIT_S) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if source.read(0.05) is not None:
            return time.monotonic() - start
    return None


def watchdog_round(server: RtspServer, outage_s: float) -> dict[str, float | None]:
    source = CameraSource(CameraSourceConfig(type="camera", name="bench", uri=server.url()))
    c = source.counters
    out: dict[str, float | None] = {"cold start → first sample": first_sample(source)}
    until(source, lambda: c["samples"] >= 5)
    server.kill()
    out["dead → lost"] = until(source, lambda: c["stream_lost"] >= 1)
    wait = time.monotonic() + outage_s
    until(source, lambda: time.monotonic() >= wait)
    server.start()
    out["back after dead"] = first_sample(source)
    restored = [e for e in source.pop_events() if e.state == "restored"]
    out["dead: frames missing (down_s)"] = restored[-1].down_s if restored else None
    until(source, lambda: False, limit=1.0)  # serving again for a second
    server.freeze()
    out["frozen → frozen event"] = until(source, lambda: c["stream_frozen"] >= 1)
    wait = time.monotonic() + outage_s
    until(source, lambda: time.monotonic() >= wait)
    server.thaw()
    out["back after frozen"] = first_sample(source)
    restored = [e for e in source.pop_events() if e.state == "restored"]
    out["frozen: frames missing (down_s)"] = restored[-1].down_s if restored else None
    source.close()
    return out


def open_round(url: str) -> dict[str, float | None]:
    """Bare OpenCV: seconds to open and to the first frame, per options, in this order."""
    out: dict[str, float | None] = {}
    ms = 10_000
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    for name, options in OPEN_VARIANTS.items():
        if options is None:
            os.environ.pop(OPTIONS_ENV, None)
        else:
            os.environ[OPTIONS_ENV] = options
        start = time.monotonic()
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        opened = time.monotonic() - start
        ok = cap.isOpened() and cap.grab()
        first = time.monotonic() - start
        cap.release()
        out[f"open: {name}"] = opened if ok else None
        out[f"first frame: {name}"] = first if ok else None
    os.environ.pop(OPTIONS_ENV, None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--outage-s", type=float, default=2.0, help="server down/stopped (s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    reason = rtsp_unavailable()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 1
    if os.environ.get(OPTIONS_ENV) is not None:
        print(f"unset {OPTIONS_ENV} first: it overrides the options this compares")
        return 1
    logging.basicConfig(level=logging.ERROR)
    rounds: list[dict[str, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rtsp-") as tmp:
        clip = h264_clip(Path(tmp), seconds=90)
        for i in range(args.repeats):
            with RtspServer(clip) as server:
                figures = open_round(server.url())
                figures.update(watchdog_round(server, args.outage_s))
            rounds.append(figures)
            print(f"round {i + 1}/{args.repeats} done", flush=True)
    report(rounds, args.repeats, args.outage_s)
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=1, ensure_ascii=False))
    return 0


def report(rounds: list[dict[str, float | None]], repeats: int, outage_s: float) -> None:
    print(
        f"\n{repeats} repetitions, server down/stopped {outage_s:g} s, 15 fps 320x240 H.264, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'figure (s)':<56} {'median':>7} {'worst':>7}   goal")
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        got = [v for v in values if v is not None]
        median = statistics.median(got) if got else None
        worst = max(got) if got else None
        FIGURES[key] = {"median_s": median, "worst_s": worst, "missing": len(values) - len(got)}
        goal = GOALS.get(key, 2.0 if key.startswith("back") else None)
        note = f"<= {goal:g}" if goal is not None else ""
        if len(got) < len(values):
            note += f" ({len(values) - len(got)} not reached in {LIMIT_S:g} s)"
        shown = [f"{v:7.2f}" if v is not None else f"{'-':>7}" for v in (median, worst)]
        print(f"{key:<56} {shown[0]} {shown[1]}   {note}")


if __name__ == "__main__":
    raise SystemExit(main())
