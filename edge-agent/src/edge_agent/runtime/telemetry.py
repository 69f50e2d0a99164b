"""Host and process health for telemetry and /metrics, read with psutil."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostReading:
    uptime_s: float
    cpu_percent: float
    mem_percent: float
    disk_percent: float
    temperature_c: float | None
    rss_bytes: int
    open_fds: int | None


class HostSampler:
    """Reads CPU, memory, disk (of the outbox's filesystem), temperature, RSS and fds.

    ``cpu_percent`` is measured between two calls, so the first reading is primed at
    construction and every later one covers one telemetry interval.
    """

    def __init__(self, disk_path: Path) -> None:
        self.disk_path = disk_path
        self.started = time.monotonic()
        self._process = psutil.Process()
        psutil.cpu_percent(None)

    def _temperature(self) -> float | None:
        reader = getattr(psutil, "sensors_temperatures", None)
        if reader is None:
            return None
        try:
            sensors = reader()
        except (OSError, RuntimeError) as e:
            log.debug("temperature sensors unreadable: %s", e)
            return None
        values = [t.current for entries in sensors.values() for t in entries if t.current]
        return float(max(values)) if values else None

    def _open_fds(self) -> int | None:
        try:
            return int(self._process.num_fds())
        except (AttributeError, psutil.Error):
            return None

    def read(self) -> HostReading:
        try:
            disk = float(psutil.disk_usage(str(self.disk_path)).percent)
        except OSError:
            disk = 0.0
        return HostReading(
            uptime_s=time.monotonic() - self.started,
            cpu_percent=min(100.0, float(psutil.cpu_percent(None))),
            mem_percent=float(psutil.virtual_memory().percent),
            disk_percent=disk,
            temperature_c=self._temperature(),
            rss_bytes=int(self._process.memory_info().rss),
            open_fds=self._open_fds(),
        )
