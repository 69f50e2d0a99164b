"""HTTP load with Locust: the local API's /predict and the fleet API, against a bare endpoint.

    .venv/bin/python -m benchmarks.bench_http_load [--seconds 20] [--json OUT]

Three targets run in this process on loopback, each loaded in turn by a headless Locust
subprocess at rising user counts (no think time):

- ``bare``: a FastAPI route returning a constant on the same uvicorn set-up, the ceiling of
  the HTTP stack on this box (the raw baseline);
- ``predict``: the edge agent's ``POST /predict`` with a JPEG pet photo and a model of
  realistic cost (224x224 input, one 512x512x512 MatMul), at most 2 predictions at once;
- ``fleet``: the fleet service's ``GET /api/devices`` over 200 registered devices.

For each level: accepted requests/s, p50/p99 of accepted requests, requests shed with 503,
any other 5xx, connection errors, and whether the service still answered afterwards.
Overload must show as 503 with Retry-After, never as crashes or other 5xx.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI
from pydantic import SecretStr

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.api import ApiServer, create_app
from edge_agent.protocol import DeviceKind
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.support.media import generated_frames
from tests.support.onnx_models import image_classifier

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"bare": [16, 64], "predict": [2, 16, 128], "fleet": [8, 64, 256]}
HEALTH = {"bare": "/ping", "predict": "/model", "fleet": "/healthz"}


def photo_jpeg(data: Path) -> bytes:
    photos = sorted((data / "pets").glob("*/*.jpg"))
    image = cv2.imread(str(photos[0])) if photos else None
    frame = image if image is not None else generated_frames(1, (640, 480))[0]
    ok, encoded = cv2.imencode(".jpg", np.asarray(frame, dtype=np.uint8))
    assert ok
    return bytes(encoded)


@contextmanager
def targets(tmp: Path, broker: MosquittoBroker) -> Iterator[dict[str, str]]:
    bare = FastAPI()

    @bare.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    bare_server = ApiServer(bare, "127.0.0.1", 0)
    bare_server.start()
    image_classifier(tmp / "agent" / "catdog.onnx", size=224, slow_matmuls=1)
    agent = build_agent(camera_config(tmp / "agent", broker.port, frames=2), with_source=False)
    agent_server = ApiServer(
        create_app(agent, token=None, max_concurrent_predict=2), "127.0.0.1", 0
    )
    agent_server.start()
    settings = FleetSettings(
        database_url=f"sqlite:///{tmp / 'fleet.db'}",
        broker_port=broker.port,
        http_port=0,
        root="httpload",
        viewer_tokens={"bench": SecretStr(FLEET_TOKEN)},  # reads need a token, a viewer's
    )
    fleet = FleetService(settings).start()
    sims = [SimulatedDevice(f"cam-{i:03d}", f"site-{i % 4}", DeviceKind.CAMERA) for i in range(200)]
    fleet.store.ingest([Envelope(d.site, d.status(), time.time()) for d in sims])
    fleet.store.ingest([Envelope(d.site, d.telemetry(), time.time()) for d in sims])
    try:
        yield {"bare": bare_server.url, "predict": agent_server.url, "fleet": fleet.base_url}
    finally:
        fleet.stop()
        agent_server.stop()
        agent.store.close()
        bare_server.stop()


FLEET_TOKEN = "bench-viewer-token-0123456789"  # a throwaway fleet on loopback


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def locust(target: str, url: str, users: int, seconds: float, body: Path, tmp: Path) -> dict:
    out = tmp / f"locust-{target}-{users}.json"
    env = {
        **os.environ,
        "BENCH_TARGET": target,
        "BENCH_BODY": str(body),
        "BENCH_OUT": str(out),
        "BENCH_FLEET_TOKEN": FLEET_TOKEN,
    }
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locust_targets.py"),
        "--headless", "--only-summary", "--loglevel", "ERROR", "-u", str(users),
        "-r", str(users), "-t", f"{int(seconds)}s", "--stop-timeout", "2", "--host", url,
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(command, env=env, capture_output=True, timeout=seconds + 90, check=False)
    elapsed = min(time.monotonic() - started, seconds)
    if not out.is_file():
        raise SystemExit(f"locust wrote no results for {target} at {users} users")
    raw = json.loads(out.read_text())
    times = {int(k): v for k, v in raw["times"].items()}
    ok = sorted(t for code, ts in times.items() if 200 <= code < 300 for t in ts)
    shed = len(times.get(503, []))
    other_5xx = sum(len(ts) for code, ts in times.items() if code >= 500 and code != 503)
    pct = (lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]) if ok else (lambda q: float("nan"))
    return {
        "target": target,
        "users": users,
        "accepted_rps": len(ok) / elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "shed_503": shed,
        "shed_share": shed / max(1, sum(len(ts) for ts in times.values())),
        "other_5xx": other_5xx,
        "other_4xx": sum(len(ts) for code, ts in times.items() if 400 <= code < 500),
        "connection_errors": len(times.get(0, [])),
        "healthy_after": answers(url + HEALTH[target]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as folder, MosquittoBroker() as broker:
        tmp = Path(folder)
        body = tmp / "photo.jpg"
        body.write_bytes(photo_jpeg(args.data))
        with targets(tmp, broker) as urls:
            for target, levels in LEVELS.items():
                for users in levels:
                    rows.append(locust(target, urls[target], users, args.seconds, body, tmp))
    bare = max(r["accepted_rps"] for r in rows if r["target"] == "bare")
    for row in rows:
        row["rps_vs_bare"] = row["accepted_rps"] / bare
    return {"levels": rows, "bare_rps": bare}


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'target':<8} {'users':>5} {'ok req/s':>9} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'503':>6} {'503 %':>6} {'5xx':>4} {'conn err':>8} {'healthy':>7} {'vs bare':>7}"
    )
    for r in result["levels"]:
        print(
            f"{r['target']:<8} {r['users']:>5} {r['accepted_rps']:>9.1f} {r['p50_ms']:>7.1f} "
            f"{r['p99_ms']:>8.1f} {r['shed_503']:>6} {100 * r['shed_share']:>6.1f} "
            f"{r['other_5xx']:>4} {r['connection_errors']:>8} {r['healthy_after']!s:>7} "
            f"{r['rps_vs_bare']:>7.2f}"
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="per target and level")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--json", type=Path)
    return p


def main() -> None:
    args = parser().parse_args()
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
