"""Soak at nominal rates: the agent on a looping camera video, a broker and the fleet service.

    .venv/bin/python -m benchmarks.soak [--minutes 30] [--fps 10] [--kind station] [--json OUT]

The agent runs as ``edge-agent run`` in its own process (camera source looping a video at
``--fps``, local API on, telemetry every 5 s, the outbox on disk) against a private
Mosquitto; a fleet service consumes everything in a second process. ``--kind station``
runs a weather station instead: synthetic hourly rows replayed at ``--station-speed``
(3600: an hour, so a forecast, a second), streamed from the CSV, API on. Every few seconds
the resident memory and open file descriptors of both processes are sampled.

The first fifth of the run (at least 20 s) is warm-up: caches, arenas and the SQLite page
cache fill up there. After it, the plateau is the median of the warm-up's last samples and
the figures are the slope (MiB/min by least squares), the growth above the plateau and
the same for open files. Flat means: growth within max(8 MiB, 10 %) of the plateau and at
most 4 more open files. Predictions received by the fleet are counted as a liveness check.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import psutil
import yaml

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.stack.mosquitto import MosquittoBroker
from tests.integration.agent_fixtures import camera_config, station_config

ROOT = Path(__file__).resolve().parents[1]


def fleet_process(port: int, db: str, ready: EventType, stop: EventType) -> None:
    settings = FleetSettings(database_url=f"sqlite:///{db}", broker_port=port, http_port=0)
    with FleetService(settings):
        ready.set()
        stop.wait()


def _slope_per_min(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return 60.0 * sum((t - mt) * (v - mv) for t, v in samples) / den if den else 0.0


def analyse(series: list[tuple[float, float]], warm_s: float) -> dict[str, float]:
    """Plateau at the end of the warm-up, growth and slope after it."""
    warm = [v for t, v in series if t <= warm_s]
    after = [(t, v) for t, v in series if t > warm_s]
    tail = sorted(warm[-max(3, len(warm) // 3) :])
    plateau = tail[len(tail) // 2]
    peak = max(v for _, v in after) if after else plateau
    last = sorted(v for _, v in after[-max(3, len(after) // 5) :]) if after else [plateau]
    return {
        "plateau": plateau,
        "peak_after_warmup": peak,
        "growth": peak - plateau,
        "end_median": last[len(last) // 2],
        "slope_per_min": _slope_per_min(after),
    }


def agent_config(
    kind: str, tmp: Path, port: int, seconds: float, fps: float, station_speed: float
) -> dict[str, Any]:
    if kind == "station":
        hours = int(seconds * station_speed / 3600) + 48  # never runs out during the soak
        return station_config(tmp, port, hours=hours, speed=station_speed).model_dump(
            mode="json", exclude_none=True
        )
    config = camera_config(tmp, port, frames=60).model_dump(mode="json", exclude_none=True)
    config["source"].update({"on_end": "loop", "pace": "realtime", "fps": fps})
    return config


def run(
    minutes: float,
    fps: float,
    interval_s: float | None = None,
    kind: str = "camera",
    station_speed: float = 3600.0,
) -> dict[str, Any]:
    seconds = minutes * 60
    interval = interval_s or max(1.0, min(10.0, seconds / 120))
    warm_s = max(20.0, seconds / 5)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="soak-") as folder, MosquittoBroker() as broker:
        tmp = Path(folder)
        config = agent_config(kind, tmp / "agent", broker.port, seconds, fps, station_speed)
        config["api"] = {"enabled": True, "port": 0}
        config["limits"]["telemetry_interval_s"] = 5.0
        path = tmp / "agent" / "device.yaml"
        path.write_text(yaml.safe_dump(config))
        ready, stop = ctx.Event(), ctx.Event()
        fleet = ctx.Process(
            target=fleet_process, args=(broker.port, str(tmp / "fleet.db"), ready, stop)
        )
        fleet.start()
        if not ready.wait(60):
            raise SystemExit("fleet service did not start")
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(path)],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        procs = {"agent": psutil.Process(agent.pid), "fleet": psutil.Process(fleet.pid)}
        series: dict[str, list[tuple[float, float]]] = {
            f"{name}_{what}": [] for name in procs for what in ("rss_mib", "fds")
        }
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < seconds:
                if agent.poll() is not None:
                    raise SystemExit(f"the agent exited with {agent.returncode} during the soak")
                for name, proc in procs.items():
                    series[f"{name}_rss_mib"].append((elapsed, proc.memory_info().rss / 2**20))
                    series[f"{name}_fds"].append((elapsed, float(proc.num_fds())))
                time.sleep(interval)
        finally:
            agent.terminate()
            agent.wait(30)
            stop.set()
            fleet.join(30)
        from cloud_trainer.fleet.store import FleetStore, sqlite_url

        store = FleetStore(sqlite_url(tmp / "fleet.db"))
        counts = store.counts()
        store.close()
    result: dict[str, Any] = {
        "kind": kind,
        "minutes": minutes,
        "fps": fps if kind == "camera" else None,
        "station_speed": station_speed if kind == "station" else None,
        "warmup_s": warm_s,
        "samples": len(series["agent_rss_mib"]),
        "fleet_counts": counts,
    }
    for key, values in series.items():
        result[key] = analyse(values, warm_s)
    for name in procs:
        rss = result[f"{name}_rss_mib"]
        fds = result[f"{name}_fds"]
        rss["bound"] = max(8.0, 0.10 * rss["plateau"])
        fds["bound"] = 4.0
        result[f"{name}_flat"] = rss["growth"] <= rss["bound"] and fds["growth"] <= fds["bound"]
    return result


def print_result(result: dict[str, Any]) -> None:
    rate = (
        f"{result['fps']:g} fps"
        if result["kind"] == "camera"
        else f"station replay x{result['station_speed']:g}"
    )
    print(
        f"soak ({result['kind']}) {result['minutes']:g} min at {rate}, {result['samples']} "
        f"samples, warm-up {result['warmup_s']:.0f} s; fleet stored {result['fleet_counts']}"
    )
    for name in ("agent", "fleet"):
        rss, fds = result[f"{name}_rss_mib"], result[f"{name}_fds"]
        print(
            f"{name:<6} RSS plateau {rss['plateau']:7.1f} MiB, growth {rss['growth']:+6.1f} "
            f"(bound {rss['bound']:.1f}), slope {rss['slope_per_min']:+7.3f} MiB/min | "
            f"fds {fds['plateau']:.0f} growth {fds['growth']:+.0f} slope "
            f"{fds['slope_per_min']:+.3f}/min | flat: {result[f'{name}_flat']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--kind", choices=["camera", "station"], default="camera")
    parser.add_argument("--station-speed", type=float, default=3600.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.minutes, args.fps, kind=args.kind, station_speed=args.station_speed)
    print_result(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
