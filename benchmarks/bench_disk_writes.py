"""What a camera and a weather station write to their SD card per hour, and what bounds it.

    .venv/bin/python -m benchmarks.bench_disk_writes [--seconds 60] [--commit-interval 0.05]
        [--offline]

Runs a camera agent (a looping video at 10 frames/s, every frame published, visits with
snapshots on) and a station agent (hourly rows replayed an hour a second) as real processes
against a private Mosquitto, for ``--seconds`` after their first prediction. Reports, per
hour: ``write_bytes`` from ``/proc/PID/io`` (pages the process dirtied: what reaches the
card, before the kernel merges rewrites of a page still in cache) and ``wchar`` (bytes
passed to write calls, pipes included), and splits ``wchar`` by file (outbox database, its
WAL, the log on stderr, visit snapshots, other) from ``strace -y`` when strace is installed.
Also prints the largest WAL and outbox files seen, against the settings that bound them.
``--offline`` points both agents at a port where no broker listens: everything they
produce then stays in the outbox (predictions counted there), the worst case for the card.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloud_trainer.stack.mosquitto import MosquittoBroker, free_port
from edge_agent.comms.mqtt import BrokerEndpoint
from tests.integration.agent_fixtures import camera_config, station_config
from tests.support.mqtt import Collector

# "1234 pwrite64(7</tmp/x/outbox.db-wal>, "..."..., 4120, 8192) = 4120"
_WRITE = re.compile(r"^\d+\s+(?:write|pwrite64|writev|pwritev2?)\((\d+)<([^>]*)>.*\)\s+=\s+(\d+)")


@dataclass
class DeviceRun:
    """One agent process under measurement."""

    name: str
    config: dict[str, Any]
    topic: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    io_start: dict[str, int] = field(default_factory=dict)
    io_end: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    largest: Counter[str] = field(default_factory=Counter)


def read_io(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def category(path: str, workdir: Path) -> str:
    """Which part of the agent a written file belongs to."""
    name = Path(path).name
    if name.endswith(".db-wal"):
        return "outbox WAL"
    if name.endswith(".db"):
        return "outbox database"
    if path == str(workdir / "agent.log"):
        return "log (stderr)"
    if "/visits/" in path:
        return "visit snapshots"
    if path.startswith(("socket:", "pipe:", "anon_inode:")):
        return "sockets and pipes"
    return "other files"


def camera(tmp: Path, port: int, interval: float) -> DeviceRun:
    work = tmp / "camera"
    data = camera_config(work, port, frames=100).model_dump(mode="json", exclude_none=True)
    data["source"].update({"on_end": "loop", "pace": "realtime", "fps": 10})
    data["limits"].update({"telemetry_interval_s": 10.0, "outbox_commit_interval_s": interval})
    data["visits"] = {"predictions": "all"}
    data["api"] = {"enabled": False}
    return DeviceRun("camera", data, "mlops/park/cam-01/predictions", work)


def station(tmp: Path, port: int, interval: float) -> DeviceRun:
    work = tmp / "station"
    config = station_config(work, port, hours=20_000, speed=3600.0)
    data = config.model_dump(mode="json", exclude_none=True)
    data["limits"].update({"telemetry_interval_s": 10.0, "outbox_commit_interval_s": interval})
    data["api"] = {"enabled": False}
    return DeviceRun("station", data, "mlops/port/ws-01/predictions", work)


def start(run: DeviceRun) -> None:
    path = run.workdir / "device.yaml"
    path.write_text(yaml.safe_dump(run.config))
    log = (run.workdir / "agent.log").open("wb")
    run.proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(path)], stderr=log
    )


def watch_sizes(runs: list[DeviceRun], stop: threading.Event) -> None:
    """The largest size each outbox file reached, sampled every 0.2 s."""
    while not stop.wait(0.2):
        for run in runs:
            for file in run.workdir.glob("outbox.db*"):
                try:
                    size = file.stat().st_size
                except FileNotFoundError:
                    continue
                key = file.name
                run.largest[key] = max(run.largest[key], size)


def trace_split(runs: list[DeviceRun], seconds: float) -> dict[str, Counter[str]]:
    """wchar by file for each run, from strace attached for ``seconds`` (empty without it)."""
    tool = shutil.which("strace")
    if tool is None:
        time.sleep(seconds)
        return {}
    traces = {}
    for run in runs:
        assert run.proc is not None
        out = run.workdir / "strace.txt"
        args = [tool, "-f", "-qq", "-y", "-e", "trace=write,pwrite64,writev,pwritev,pwritev2"]
        args += ["-o", str(out), "-p", str(run.proc.pid)]
        traces[run.name] = (subprocess.Popen(args, stderr=subprocess.DEVNULL), out)
    time.sleep(seconds)
    split: dict[str, Counter[str]] = {}
    for run in runs:
        tracer, out = traces[run.name]
        tracer.terminate()
        tracer.wait(10)
        counts: Counter[str] = Counter()
        for line in out.read_text(errors="replace").splitlines():
            match = _WRITE.match(line)
            if match:
                counts[category(match.group(2), run.workdir)] += int(match.group(3))
        split[run.name] = counts
    return split


def queued(run: DeviceRun) -> int:
    """Rows in the run's outbox file, read beside the agent (WAL readers do not block it)."""
    with sqlite3.connect(run.workdir / "outbox.db", timeout=10) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def measure(seconds: float, interval: float, offline: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as folder, MosquittoBroker() as mq:
        tmp = Path(folder)
        port = free_port() if offline else mq.port
        runs = [camera(tmp, port, interval), station(tmp, port, interval)]
        endpoint = BrokerEndpoint(mq.host, mq.port)
        collectors = [Collector(endpoint, run.topic).__enter__() for run in runs]
        for run in runs:
            start(run)
        if offline:
            time.sleep(8.0)  # start-up; the agents go on without a broker
        else:
            for collector in collectors:
                collector.wait_for(1, timeout=60)
        time.sleep(2.0)  # past start-up: imports, model load, first checkpoint
        stop = threading.Event()
        sizes = threading.Thread(target=watch_sizes, args=(runs, stop), daemon=True)
        sizes.start()
        counted = [
            queued(run) if offline else len(c.messages)
            for run, c in zip(runs, collectors, strict=True)
        ]
        for run in runs:
            assert run.proc is not None
            run.io_start = read_io(run.proc.pid)
        began = time.monotonic()
        split = trace_split(runs, seconds)
        elapsed = time.monotonic() - began
        for run, collector, before in zip(runs, collectors, counted, strict=True):
            assert run.proc is not None
            run.io_end = read_io(run.proc.pid)
            run.messages = (queued(run) if offline else len(collector.messages)) - before
        stop.set()
        for run, collector in zip(runs, collectors, strict=True):
            assert run.proc is not None
            run.proc.terminate()
            run.proc.wait(30)
            collector.__exit__(None, None, None)
        return {**report(runs, split, elapsed, interval), "offline": offline}


def report(
    runs: list[DeviceRun], split: dict[str, Counter[str]], elapsed: float, interval: float
) -> dict[str, Any]:
    per_hour = 3600.0 / elapsed
    result: dict[str, Any] = {"seconds": elapsed, "outbox_commit_interval_s": interval}
    for run in runs:
        delta = {k: run.io_end[k] - run.io_start[k] for k in ("write_bytes", "wchar", "syscw")}
        traced = split.get(run.name, Counter())
        result[run.name] = {
            "predictions_per_hour": run.messages * per_hour,
            "write_mib_per_hour": delta["write_bytes"] * per_hour / 2**20,
            "wchar_mib_per_hour": delta["wchar"] * per_hour / 2**20,
            "write_calls_per_hour": delta["syscw"] * per_hour,
            "write_bytes_per_prediction": delta["write_bytes"] / max(1, run.messages),
            "wchar_split_mib_per_hour": {k: v * per_hour / 2**20 for k, v in traced.items()},
            "largest_files_mib": {k: v / 2**20 for k, v in run.largest.items()},
        }
    return result


def print_report(result: dict[str, Any]) -> None:
    print(
        f"{result['seconds']:.0f} s measured, outbox_commit_interval_s "
        f"{result['outbox_commit_interval_s']}, broker "
        f"{'unreachable' if result['offline'] else 'up'}; figures per hour"
    )
    for name in ("camera", "station"):
        r = result[name]
        print(
            f"{name:<8} {r['predictions_per_hour']:>8.0f} predictions   write_bytes "
            f"{r['write_mib_per_hour']:7.1f} MiB ({r['write_bytes_per_prediction']:.0f} B a "
            f"prediction)   wchar {r['wchar_mib_per_hour']:7.1f} MiB   "
            f"{r['write_calls_per_hour']:.0f} write calls"
        )
        for part, mib in sorted(r["wchar_split_mib_per_hour"].items(), key=lambda kv: -kv[1]):
            print(f"           wchar {part:<18} {mib:8.2f} MiB")
        files = ", ".join(f"{k} {v:.2f} MiB" for k, v in sorted(r["largest_files_mib"].items()))
        print(f"           largest outbox files: {files}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--commit-interval", type=float, default=0.05)
    parser.add_argument("--offline", action="store_true", help="no broker: all stays queued")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.seconds, args.commit_interval, args.offline)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
