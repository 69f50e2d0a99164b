"""Latency of ``GET /api/devices`` over a fleet with history, at a few concurrent users.

    .venv/bin/python -m benchmarks.bench_device_list [--devices 1000] [--hours 3]
        [--users 8] [--seconds 15] [--postgres URL|private] [--json OUT]

A fleet service (real Mosquitto, real store) holds ``--devices`` devices, each with
``--hours`` of telemetry at one message a minute and a status; ``--users`` threads (in a
process of their own) then ask back to back (no think time) for ``--seconds``: the whole
listing (what existing clients ask), a page of 100 (``?limit=100``), and ``/healthz``, the
same service's floor without the store (the raw baseline). Reported: requests/s, p50, p99.
SQLite always; PostgreSQL with ``--postgres`` (``private`` starts a throwaway, durable one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope, FleetStore
from cloud_trainer.stack.mosquitto import MosquittoBroker
from cloud_trainer.stack.postgres import PostgresServer
from edge_agent.protocol import DeviceKind

TOKEN = "bench-operator-token-0123456789"
BATCH = 2000


def fill(store: FleetStore, devices: int, hours: float) -> int:
    """Each device's status and ``hours`` of telemetry, one a minute, ending now."""
    now = time.time()
    start = datetime.fromtimestamp(now - hours * 3600, UTC)
    sims = [
        SimulatedDevice(f"cam-{i:04d}", f"site-{i % 20:02d}", DeviceKind.CAMERA, clock=start)
        for i in range(devices)
    ]
    batch: list[Envelope] = []
    written = 0
    for _minute in range(int(hours * 60)):
        for sim in sims:
            batch.append(Envelope(sim.site, sim.telemetry(), now))
            sim.clock = (sim.clock or start) + timedelta(seconds=59)
            if len(batch) >= BATCH:
                written += sum(store.ingest(batch).stored.values())
                batch = []
    batch += [Envelope(sim.site, sim.status(), now) for sim in sims]
    written += sum(store.ingest(batch).stored.values())
    return written


def load(
    base_url: str,
    path: str,
    params: dict[str, Any],
    users: int,
    seconds: float,
    token: str = TOKEN,
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def user() -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            http.get(path, params=params)  # warm the connection
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                answer = http.get(path, params=params)
                mine.append(time.perf_counter() - began)
                bad += answer.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=user) for _ in range(users)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
    }


def measure(
    name: str, url: str, broker: MosquittoBroker, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    settings = FleetSettings(
        database_url=url,
        broker_host=broker.host,
        broker_port=broker.port,
        root=f"devlist{name}",
        http_port=0,
        api_tokens=parse_tokens(f"bench={TOKEN}"),
        samples_dir=tmp / f"samples-{name}",
    )
    service = FleetService(settings).start()
    try:
        began = time.perf_counter()
        written = fill(service.store, args.devices, args.hours)
        fill_s = time.perf_counter() - began
        print(f"{name}: {written} messages stored in {fill_s:.0f} s")
        figures: dict[str, Any] = {"messages": written, "fill_s": fill_s}
        targets: list[tuple[str, str, dict[str, Any]]] = [
            ("healthz", "/healthz", {}),
            ("all", "/api/devices", {}),
            ("page100", "/api/devices", {"limit": 100}),
        ]
        for label, path, params in targets:
            # The users run in a process of their own: in this one they would compete with
            # the service for the interpreter lock, and measure that.
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                job = pool.submit(load, service.base_url, path, params, args.users, args.seconds)
                result = job.result()
            figures[label] = result
            print(
                f"{name:10s} {label:8s} {args.users} users: {result['rps']:7.0f} req/s  "
                f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
                f"errors {result['errors']}"
            )
        return figures
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--postgres", help="postgresql://… of an empty database, or 'private'")
    parser.add_argument("--no-sqlite", action="store_true", help="measure PostgreSQL only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        broker = stack.enter_context(MosquittoBroker(workdir=tmp / "mq"))
        print(f"{args.devices} devices, {args.hours:g} h of telemetry each (1/min)")
        if not args.no_sqlite:
            results["sqlite"] = measure(
                "sqlite", f"sqlite:///{tmp / 'fleet.db'}", broker, tmp, args
            )
        if args.postgres:
            url = args.postgres
            if url == "private":
                url = stack.enter_context(PostgresServer()).url
            results["postgresql"] = measure("postgresql", url, broker, tmp, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
