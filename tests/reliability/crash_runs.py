"""Sets up and runs the crash harness: outbox writers and model installs, killed at random."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_trainer.release.artefacts import ArtefactServer
from cloud_trainer.release.publisher import read_spec
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.outbox import OutboxStore
from edge_agent.protocol import SigningKey
from tests.support.mqtt import Collector
from tests.support.onnx_models import image_classifier

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = 4  # distinct model files; version v ships file v % VARIANTS


@dataclass
class CrashReport:
    summary: dict[str, Any]
    lines: list[tuple[int, str]]

    @property
    def errors(self) -> list[str]:
        return list(self.summary["errors"])

    def of(self, kind: str) -> list[tuple[int, str]]:
        return [
            (cycle, rest) for cycle, line in self.lines if (rest := line[2:]) and line[0] == kind
        ]


def _run(spec: dict[str, Any], workdir: Path, timeout: float) -> CrashReport:
    spec_path = workdir / f"{spec['workload']}-spec.json"
    spec["lines_file"] = str(workdir / f"{spec['workload']}-lines.txt")
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.crash_harness", str(spec_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(f"crash harness failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    lines = []
    for raw in Path(spec["lines_file"]).read_text().splitlines():
        cycle, _, line = raw.partition(" ")
        lines.append((int(cycle), line))
    return CrashReport(summary, lines)


@dataclass
class OutboxOutcome:
    report: CrashReport
    committed: list[int]
    received: set[int]
    queued: set[int]

    @property
    def lost(self) -> list[int]:
        return [s for s in self.committed if s not in self.queued and s not in self.received]


def outbox_crashes(
    broker: MosquittoBroker, workdir: Path, kills: int, window_s: tuple[float, float] = (0.0, 0.3)
) -> OutboxOutcome:
    """Kill outbox writers ``kills`` times; then compare what they committed with the broker."""
    workdir.mkdir(parents=True, exist_ok=True)
    topic = f"crash/outbox/{workdir.name}"
    spec = {
        "workload": "outbox",
        "kills": kills,
        "kill_window_s": list(window_s),
        "db": str(workdir / "outbox.db"),
        "port": broker.port,
        "topic": topic,
    }
    endpoint = BrokerEndpoint(broker.host, broker.port)
    with Collector(endpoint, topic) as collector:
        report = _run(spec, workdir, timeout=60 + kills * 2)
        store = OutboxStore(workdir / "outbox.db")
        queued = {row.seq for row in store.fetch(-1, 10_000_000)}
        store.close()
        committed = [int(rest) for _c, rest in report.of("C")]
        # What left the outbox was acknowledged by the broker: wait until it has arrived.
        received = collector.wait_for_seqs(set(committed) - queued, timeout=60)
    return OutboxOutcome(report, committed, received, queued)


@contextmanager
def install_world(workdir: Path) -> Iterator[dict[str, Any]]:
    """Keys, model variants on an artefact server, and the updater config of the device."""
    key = SigningKey.generate()
    key.save(workdir / "keys" / "fleet.key", workdir / "keys" / "fleet.pub")
    provisioned = workdir / "src" / "v1.onnx"
    image_classifier(provisioned)
    with ArtefactServer(workdir / "artefacts") as server:
        models = []
        for k in range(VARIANTS):
            path = workdir / "src" / f"variant{k}.onnx"
            image_classifier(path, bias=0.01 * (k + 1))
            sha, size, url = server.publish_file(path)
            models.append(
                {"sha256": sha, "size": size, "url": url, "spec": read_spec(path).model_dump_json()}
            )
        yield {
            "workload": "install",
            "key": str(workdir / "keys" / "fleet.key"),
            "provisioned": str(provisioned),
            "models": models,
            "updater": {
                "fleet_public_key": str(workdir / "keys" / "fleet.pub"),
                "models_dir": str(workdir / "device" / "models"),
                "disk_budget_mb": 64,
                "keep_versions": 2,
                "download": {"timeout_s": 5, "attempts": 2, "backoff_s": 0.05},
                "smoke": {"samples": 2, "latency_budget_factor": 0.02},
                "probation": {"frames": 5, "min_samples_to_fail": 5},
            },
        }


def install_crashes(
    workdir: Path, kills: int, window_s: tuple[float, float] = (0.0, 1.2)
) -> CrashReport:
    """Kill a device applying releases back to back ``kills`` times, then boot it once more."""
    workdir.mkdir(parents=True, exist_ok=True)
    with install_world(workdir) as spec:
        spec.update(kills=kills, kill_window_s=list(window_s))
        report = _run(spec, workdir, timeout=60 + kills * 4)
    report.summary["variants"] = [m["sha256"] for m in spec["models"]]
    return report


def boot_violations(report: CrashReport) -> list[str]:
    """Boots that served something other than the file released for that version, or that
    went back behind a version the device had reported committed."""
    variants: list[str] = report.summary["variants"]
    problems = []
    committed = 1
    offered = 1
    for cycle, line in report.lines:
        kind, rest = line[:1], line[2:].split(" ")
        if kind == "S":
            version = int(rest[1])
            offered = max(offered, version)
            if rest[0] == "committed":
                committed = max(committed, version)
        elif kind == "B":
            version, sha = int(rest[0]), rest[1]
            if version > 1 and sha != variants[version % VARIANTS]:
                problems.append(f"kill {cycle}: v{version} booted with sha {sha[:12]}")
            if version < committed:
                problems.append(f"kill {cycle}: booted v{version}, v{committed} was committed")
            if version > offered:
                problems.append(f"kill {cycle}: booted v{version}, never offered")
    return problems
