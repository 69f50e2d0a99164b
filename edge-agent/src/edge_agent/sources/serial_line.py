"""Weather station on a serial line speaking one CSV text line per reading.

Protocol (ASCII/UTF-8, ``\\n`` or ``\\r\\n`` terminated, at most 512 bytes a line)::

    ts,temperature_c,apparent_temperature_c,humidity,wind_speed_kmph,wind_bearing_deg,visibility_km,pressure_mb,condition
    2026-11-28T12:00:00Z,3.2,0.5,0.87,14.1,250,9.8,1011.6,rain

``ts`` is ISO 8601 with a zone (or Unix seconds); humidity is a fraction (0-1); an empty
value is a missing one (the reading is rejected as ``rejected_nan``); ``condition`` (rain,
snow, clear) may be empty. Lines starting with ``#`` and blank lines are ignored; a line
with the wrong number of fields is ``malformed``.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import termios
import time
import tty
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_agent.config.base import ConfigModel
from edge_agent.features.weather import READING_FIELDS
from edge_agent.sources.backoff import ReconnectBackoff
from edge_agent.sources.sample import Sample
from edge_agent.sources.station import (
    CloseAfterSeconds,
    MaxAgeSeconds,
    MaxFutureSeconds,
    ReadingRejected,
    StationPipeline,
    StationReading,
    parse_reading,
)

log = logging.getLogger(__name__)

MAX_LINE = 512
FIELDS = 2 + len(READING_FIELDS)
BAUD_RATES = {
    1200: termios.B1200,
    2400: termios.B2400,
    4800: termios.B4800,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}


class SerialSourceConfig(ConfigModel):
    """A station wired to a serial port (or a USB serial adapter)."""

    type: Literal["serial"] = Field(title="Type", description="Source plugin: serial line.")
    name: str = Field(
        default="station", min_length=1, max_length=64, title="Name", description="Source name."
    )
    device: Path = Field(title="Device", description="Serial device, e.g. /dev/ttyUSB0.")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(
        default=9600, title="Baud rate", description="Line speed (8N1, no flow control)."
    )
    max_age_s: MaxAgeSeconds = 3600.0
    max_future_s: MaxFutureSeconds = 300.0
    close_after_s: CloseAfterSeconds = 300.0
    reconnect_min_s: float = Field(
        default=0.5, gt=0, title="Reconnect minimum", description="First reopen delay (s)."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, title="Reconnect maximum", description="Cap of the delay (s)."
    )


def parse_line(line: str) -> StationReading:
    parts = line.split(",")
    if len(parts) != FIELDS:
        raise ReadingRejected("malformed", f"line has {len(parts)} fields, {FIELDS} expected")
    return parse_reading(parts[0], parts[1:-1], parts[-1])


class SerialSource:
    """Reads lines with ``select`` on a raw, non-blocking descriptor; reopens when unplugged."""

    def __init__(self, config: SerialSourceConfig) -> None:
        self.config = config
        self.name = config.name
        self.counters: collections.Counter[str] = collections.Counter()
        self.pipeline = StationPipeline(
            self.counters, max_age_s=config.max_age_s, max_future_s=config.max_future_s
        )
        self.backoff = ReconnectBackoff(config.reconnect_min_s, config.reconnect_max_s)
        self._fd: int | None = None
        self._ever_opened = False
        self._buffer = b""
        self._discarding = False
        self._ready: collections.deque[Sample] = collections.deque()

    def _open(self) -> bool:
        try:
            fd = os.open(self.config.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            self.counters["reconnect_failures" if self._ever_opened else "open_failures"] += 1
            delay = self.backoff.failed()
            log.warning(
                "serial %s: cannot open %s (%s); next try in %.1fs",
                self.name,
                self.config.device,
                e.strerror,
                delay,
            )
            return False
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = BAUD_RATES[self.config.baud]
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except termios.error as e:
            os.close(fd)
            self.counters["open_failures"] += 1
            self.backoff.failed()
            log.warning("serial %s: %s is not a terminal: %s", self.name, self.config.device, e)
            return False
        if self._ever_opened:
            self.counters["reconnects"] += 1
        self._ever_opened = True
        self.backoff.succeeded()
        self._fd = fd
        self._buffer = b""
        return True

    def _drop(self, why: str) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.counters["line_drops"] += 1
        delay = self.backoff.failed()
        log.warning("serial %s: %s; reopening in %.1fs", self.name, why, delay)

    def read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._ready:
            left = deadline - time.monotonic()
            self._ready.extend(
                self.pipeline.close_due(datetime.now(UTC), self.config.close_after_s)
            )
            if self._ready:
                break
            if left <= 0:
                return None
            if self._fd is None:
                wait = self.backoff.wait_left()
                if wait > 0:
                    time.sleep(min(wait, left))
                    continue
                if not self._open():
                    continue
            self._poll(min(left, 1.0))
        return self._ready.popleft()

    def _poll(self, wait: float) -> None:
        assert self._fd is not None
        readable, _, _ = select.select([self._fd], [], [], wait)
        if not readable:
            return
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:  # EIO: the adapter was unplugged or the other end hung up
            self._drop(f"read failed ({e.strerror})")
            return
        if not chunk:
            self._drop("end of file")
            return
        self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self._discarding = True
        for raw in lines:
            if self._discarding or len(raw) > MAX_LINE:
                self._discarding = False
                self.pipeline.reject(ReadingRejected("malformed", "line longer than 512 bytes"))
                continue
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.pipeline.reject(ReadingRejected("malformed", "line is not UTF-8"))
            return
        if not text or text.startswith("#"):
            return
        try:
            reading = parse_line(text)
        except ReadingRejected as e:
            self.pipeline.reject(e)
            return
        self._ready.extend(self.pipeline.offer(reading, datetime.now(UTC)))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
