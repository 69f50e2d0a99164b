"""One command for every side-by-side benchmark: runs them, prints a summary table, writes JSON.

    .venv/bin/python -m benchmarks.run_all [--quick] [--only NAME ...] [--json OUT]
        [--catdog-models DIR ...]

Each benchmark runs in its own process (so one's threads, sessions and memory never skew
the next) with ``--json`` and writes its figures; its own table is printed as it finishes.
Every benchmark measures its raw baseline in the same run and interleaves the variants it
compares (call by call, or in rotating rounds) and reports medians. ``--quick`` shortens
every run (about 10 minutes in all on two cores) and skips the catdog training; the full
run takes about 40 minutes. Benchmarks: %s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# name → (module, quick arguments, full arguments); None skips the benchmark in that mode.
BENCHES: dict[str, tuple[str, list[str] | None, list[str] | None]] = {
    "inference": ("bench_inference", ["--seconds", "1.5"], ["--seconds", "4"]),
    "catdog": ("bench_catdog", None, ["--sizes", "160", "--rounds", "4"]),
    "publish": (
        "bench_publish",
        ["--messages", "2000", "--rounds", "3"],
        ["--messages", "5000", "--rounds", "5"],
    ),
    "agent": (
        "bench_agent",
        ["--messages", "2000", "--outage-s", "5", "--rounds", "3"],
        ["--messages", "5000", "--outage-s", "20"],
    ),
    "update": ("bench_update", ["--rounds", "3"], ["--rounds", "7"]),
    "disk": ("bench_disk_writes", ["--seconds", "20"], ["--seconds", "120"]),
    "drift": ("bench_drift", ["--trials", "3"], ["--trials", "20"]),
    "fleet_ingest": ("bench_fleet_ingest", ["--messages", "5000"], ["--messages", "20000"]),
    "fleet_sim": (
        "bench_fleet_sim",
        ["--devices", "1000", "--seconds", "10"],
        ["--devices", "500", "1000", "--seconds", "60"],
    ),
    "http": ("bench_http_load", ["--seconds", "5"], ["--seconds", "20"]),
    "rtsp": ("bench_rtsp", ["--repeats", "3"], ["--repeats", "7"]),
}
__doc__ = (__doc__ or "") % ", ".join(BENCHES)


def _f(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def _inference(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key, v in r.items():
        rows.append(
            (
                f"inference {key} engine fps",
                _f(v["engine_fps"]),
                f"raw run {_f(v['run_fps'])}, prepare+run {_f(v['prep_run_fps'])}; "
                f"engine/(prepare+run) {v['engine_fps'] / v['prep_run_fps']:.2f}",
            )
        )
    return rows


def _catdog(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for folder, v in r.items():
        name = Path(folder).name
        rows.append(
            (
                f"catdog {name} device ms/frame fp32 → int8",
                f"{_f(v['fp32/device_ms'], 2)} → {_f(v['int8/device_ms'], 2)}",
                f"raw {_f(v['fp32/raw_ms'], 2)} → {_f(v['int8/raw_ms'], 2)}; int8 speed-up "
                f"{v['fp32/device_ms'] / v['int8/device_ms']:.2f}x (1 thread)",
            )
        )
    return rows


def _publish(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (f"publish {k} msg/s", _f(v["median_msg_s"], 0), f"{v['vs_raw_paho']:.2f}x raw paho")
        for k, v in sorted(r["variants"].items(), key=lambda kv: kv[0].split("/")[::-1])
    ]


def _agent(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    outage = r["outage"]
    return [
        (
            "agent live publishing msg/s",
            _f(r["agent_live_msg_s"], 0),
            f"{r['agent_live_vs_raw']:.2f}x raw paho QoS 1",
        ),
        (
            "store-and-forward replay msg/s",
            _f(r["replay_backlog_msg_s"], 0),
            f"{r['replay_vs_raw']:.2f}x raw paho QoS 1",
        ),
        (
            "cold start to first prediction s",
            _f(r["cold_start_s"], 2),
            f"agent RSS {_f(r['rss_mib'])} MiB",
        ),
        (
            "station RSS MiB (API on / off)",
            f"{_f(r.get('station_rss_mib'))} / {_f(r.get('station_rss_no_api_mib'))}",
            f"OpenCV mapped: {r.get('station_opencv_mapped')}",
        ),
        (
            "broker outage: lost / duplicates",
            f"{outage['lost']:g} / {outage['duplicates']:g}",
            f"{outage['sent']:g} sent, catch-up {_f(outage['catch_up_s'], 2)} s",
        ),
    ]


def _update(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f"update: {k}", v, "") for k, v in r.items()]


def _disk(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            f"disk: {name} write_bytes MiB/h",
            _f(r[name]["write_mib_per_hour"]),
            f"{_f(r[name]['predictions_per_hour'], 0)} predictions/h; "
            f"wchar {_f(r[name]['wchar_mib_per_hour'])} MiB/h",
        )
        for name in ("camera", "station")
    ]


def _drift(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    if "cost" in r:
        c = r["cost"]
        rows.append(
            ("drift observe() µs", _f(c["observe_us"]), f"raw re-bin {_f(c['raw_rebin_us'])} µs")
        )
    if "weather" in r:
        w = r["weather"]
        fa = ", ".join(f"{k} {v:.3f}" for k, v in w["stationary_fa_per_week"].items())
        rows.append(("drift weather false alerts/device-week", fa, "stationary replay"))
        found = [d for d in w["delay_1sd_pressure_mb"] if d is not None and d >= 0]
        if found:
            rows.append(
                (
                    "drift 1σ pressure shift delay (h)",
                    _f(sorted(found)[len(found) // 2], 0),
                    f"{len(found)}/{len(w['delay_1sd_pressure_mb'])} detected",
                )
            )
    if "camera" in r:
        c = r["camera"]
        rows.append(("drift camera false alerts/10k frames", _f(c["stationary_fa_per_10k"], 2), ""))
    return rows


def _fleet_ingest(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [("fleet ingest raw subscriber msg/s", _f(r["raw_msg_s"], 0), "count only")]
    for key, v in r.items():
        if key.endswith("_msg_s") and key != "raw_msg_s":
            ratio = r[key.replace("_msg_s", "_vs_raw")]
            rows.append(
                (f"fleet ingest {key.removesuffix('_msg_s')} msg/s", _f(v, 0), f"{ratio:.2f}x raw")
            )
    return rows


def _fleet_sim(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            f"fleet sim {c['devices']} devices, {c['kind']} x{c['instances']}",
            f"{_f(c['ingested_msg_s'], 0)} msg/s",
            f"lag p99 {_f(c['lag_p99_ms'])} ms, lost {c['lost']} of {c['acked']}",
        )
        for c in r["configs"]
    ]


def _http(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            f"http {v['target']} {v['users']} users",
            f"{_f(v['accepted_rps'])} req/s",
            f"p99 {_f(v['p99_ms'])} ms, 503 {100 * v['shed_share']:.0f} %, other 5xx "
            f"{v['other_5xx']}, conn errors {v['connection_errors']}, up after: "
            f"{v['healthy_after']}",
        )
        for v in r["levels"]
    ]


def _rtsp(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    def median(key: str) -> Any:
        return r[key]["median_s"]

    fast = median("first frame: source (tcp + probesize 32 + low_delay)")
    return [
        (
            "rtsp dead stream → lost s",
            _f(median("dead → lost"), 2),
            f"serving {_f(median('back after dead'), 2)} s after the camera returns",
        ),
        (
            "rtsp frozen stream → frozen s",
            _f(median("frozen → frozen event"), 2),
            f"serving {_f(median('back after frozen'), 2)} s after it resumes",
        ),
        (
            "rtsp open to first frame s",
            _f(fast, 2),
            f"OpenCV defaults {_f(median('first frame: opencv defaults'), 2)} s",
        ),
    ]


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[tuple[str, str, str]]]] = {
    "inference": _inference,
    "catdog": _catdog,
    "publish": _publish,
    "agent": _agent,
    "update": _update,
    "disk": _disk,
    "drift": _drift,
    "fleet_ingest": _fleet_ingest,
    "fleet_sim": _fleet_sim,
    "http": _http,
    "rtsp": _rtsp,
}


def run_one(name: str, args: list[str], out: Path) -> dict[str, Any]:
    module = BENCHES[name][0]
    command = [sys.executable, "-m", f"benchmarks.{module}", *args, "--json", str(out)]
    print(f"\n=== {name}: {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    record: dict[str, Any] = {"args": args, "seconds": round(seconds, 1), "rc": done.returncode}
    if done.returncode == 0 and out.is_file():
        record["figures"] = json.loads(out.read_text())
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, no catdog training")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), metavar="NAME")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--catdog-models", type=Path, nargs="+", help="catdog train --work-dir folders to time"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "benchmarks": {},
    }
    with tempfile.TemporaryDirectory(prefix="run-all-") as folder:
        for name, (_module, quick, full) in BENCHES.items():
            if args.only and name not in args.only:
                continue
            bench_args = quick if args.quick else full
            if name == "catdog" and args.catdog_models:
                bench_args = ["--models", *map(str, args.catdog_models)]
            if bench_args is None:
                results["benchmarks"][name] = {"skipped": "not in quick mode"}
                continue
            record = run_one(name, bench_args, Path(folder) / f"{name}.json")
            results["benchmarks"][name] = record
            if args.json:  # keep what is done, even if a later benchmark fails
                args.json.write_text(json.dumps(results, indent=1, default=str))
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    failed = [n for n, r in results["benchmarks"].items() if r.get("rc", 0) != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def print_summary(results: dict[str, Any]) -> None:
    print(f"\n=== summary ({results['mode']} run, {results['machine']['cpus']} CPUs)")
    print(f"{'figure':<46} {'value':>18}   against the same run's baseline")
    for name, record in results["benchmarks"].items():
        if "figures" not in record:
            why = record.get("skipped") or f"failed (exit {record.get('rc')})"
            print(f"{name:<46} {'-':>18}   {why}")
            continue
        for what, value, note in SUMMARIES[name](record["figures"]):
            print(f"{what:<46} {value:>18}   {note}")


if __name__ == "__main__":
    raise SystemExit(main())
