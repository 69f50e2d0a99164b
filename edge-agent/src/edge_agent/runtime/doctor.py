"""``edge-agent doctor``: checks a device can run before it is left alone (one line per check)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.comms.mqtt import LinkError, MqttLink
from edge_agent.config.device import DeviceConfig, SecretError
from edge_agent.inference import InferenceEngine, ModelLoadError
from edge_agent.runtime.agent import broker_endpoint
from edge_agent.sources import SourceClosed, SourceError, open_source

# A device clock before this is unset (no RTC battery, no NTP yet): TLS and seq break.
CLOCK_FLOOR = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:<8} · {self.detail}"


def check_model(config: DeviceConfig) -> CheckResult:
    path = config.model.path
    if path is None:
        return CheckResult("model", False, "no model.path set")
    try:
        started = time.perf_counter()
        engine = InferenceEngine.load(path, threads=config.model.threads)
        warm = engine.warm_up()
    except ModelLoadError as e:
        return CheckResult("model", False, str(e))
    took = (time.perf_counter() - started) * 1000
    return CheckResult(
        "model",
        True,
        f"{engine.spec.name} sha256 {engine.sha256[:12]} loaded in {took:.0f} ms "
        f"(warm-up {warm:.1f} ms)",
    )


def check_source(config: DeviceConfig, timeout: float = 10.0) -> CheckResult:
    if config.source.type == "mqtt_sensor":
        return CheckResult("source", True, "MQTT sensor topic: reachable when the broker is")
    try:
        source = open_source(config.source)
    except (SourceError, OSError) as e:
        return CheckResult("source", False, f"cannot open: {e}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = source.read(0.5)
            if sample is not None:
                return CheckResult("source", True, f"{source.name} gave sample {sample.input_id}")
        problems = ", ".join(f"{k}={v}" for k, v in source.counters.items() if v) or "nothing"
        return CheckResult("source", False, f"no sample in {timeout:.0f}s ({problems})")
    except SourceClosed:
        return CheckResult("source", False, "source ended before giving a sample")
    finally:
        source.close()


def check_broker(config: DeviceConfig, timeout: float = 5.0) -> CheckResult:
    try:
        endpoint = broker_endpoint(config)
    except SecretError as e:
        return CheckResult("broker", False, str(e))
    link = MqttLink(endpoint, client_id=f"{config.device_id}-doctor")
    try:
        link.start(timeout=timeout)
    except LinkError as e:
        return CheckResult("broker", False, str(e))
    link.stop()
    who = f" as {endpoint.username}" if endpoint.username else " anonymously"
    return CheckResult("broker", True, f"connected to {endpoint.host}:{endpoint.port}{who}")


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(config: DeviceConfig) -> CheckResult:
    folder = config.limits.outbox_path.parent
    usage = shutil.disk_usage(_existing_parent(folder))
    need = config.limits.outbox_budget_bytes
    detail = f"{usage.free / 2**20:.0f} MiB free for an outbox budget of {need / 2**20:.0f} MiB"
    return CheckResult("disk", usage.free >= need, detail)


def check_clock(config: DeviceConfig) -> CheckResult:
    now = datetime.now(UTC)
    if now < CLOCK_FLOOR:
        return CheckResult("clock", False, f"clock reads {now:%Y-%m-%d}: not set (NTP? RTC?)")
    return CheckResult("clock", True, f"{now:%Y-%m-%dT%H:%M:%SZ}")


def check_api(config: DeviceConfig) -> CheckResult:
    if not config.api.enabled:
        return CheckResult("api", True, "disabled")
    try:
        token = config.api.token()
    except SecretError as e:
        return CheckResult("api", False, str(e))
    mode = "token set" if token else "no token: state-changing calls disabled"
    return CheckResult("api", True, f"{config.api.host}:{config.api.port}, {mode}")


CHECKS: list[Callable[[DeviceConfig], CheckResult]] = [
    check_clock,
    check_disk,
    check_model,
    check_source,
    check_broker,
    check_api,
]


def run_checks(config: DeviceConfig) -> list[CheckResult]:
    return [check(config) for check in CHECKS]
