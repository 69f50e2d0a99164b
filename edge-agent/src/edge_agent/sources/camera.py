"""Camera source: OpenCV capture of a file, an RTSP/HTTP URL or a device, sampled to a rate."""

from __future__ import annotations

import collections
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_agent.config.base import ConfigModel
from edge_agent.features.image_header import (
    DEFAULT_MAX_MEGAPIXELS,
    MAX_CONFIGURABLE_MEGAPIXELS,
    pixel_limit,
)
from edge_agent.sources.backoff import ReconnectBackoff
from edge_agent.sources.motion import MotionGate, MotionGateConfig
from edge_agent.sources.sample import Sample, SourceClosed

log = logging.getLogger(__name__)

_CREDENTIALS = re.compile(r"(?<=://)([^:/@]+):([^@/]*)@")


def masked_uri(uri: str | int) -> str:
    """The URI with any password replaced, for logs and errors."""
    return _CREDENTIALS.sub(r"\1:***@", str(uri))


class CameraSourceConfig(ConfigModel):
    """A camera: a video file, a network stream (RTSP, HTTP) or a local device index."""

    type: Literal["camera"] = Field(title="Type", description="Source plugin: a camera.")
    name: str = Field(
        default="camera", min_length=1, max_length=64, title="Name", description="Source name."
    )
    uri: str | int = Field(
        title="URI",
        description="Video file path, stream URL (rtsp://user:pass@host/path) or device index.",
    )
    fps: float = Field(
        default=5.0,
        gt=0,
        le=120,
        title="Sample rate",
        description="Frames per second handed to the model; the rest are grabbed and dropped.",
    )
    pace: Literal["realtime", "fast"] = Field(
        default="realtime",
        title="File pace",
        description="For files: play at the file's own speed, or as fast as the model "
        "takes frames (replays, benchmarks). Live streams are always real time.",
    )
    on_end: Literal["loop", "close", "reconnect"] = Field(
        default="reconnect",
        title="At stream end",
        description="When frames stop: loop a file from its start, close the source, or "
        "reconnect with backoff (what a dropped camera needs).",
    )
    failures_before_end: int = Field(
        default=5,
        ge=1,
        le=1000,
        title="Failures before end",
        description="Consecutive failed grabs that mean the stream ended; fewer are "
        "counted as undecodable frames and skipped.",
    )
    reconnect_min_s: float = Field(
        default=0.5, gt=0, title="Reconnect minimum", description="First reconnect delay (s)."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, title="Reconnect maximum", description="Cap of the delay (s)."
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        title="Stream timeout",
        description="Open and read timeout for network streams (s).",
    )
    motion: MotionGateConfig = Field(
        default_factory=MotionGateConfig,
        title="Motion gate",
        description="Skip inference on still scenes.",
    )
    max_megapixels: float = Field(
        default=DEFAULT_MAX_MEGAPIXELS,
        gt=0,
        le=MAX_CONFIGURABLE_MEGAPIXELS,
        title="Frame cap (MP)",
        description="A stream announcing larger frames is not opened, and a larger frame "
        "is dropped (oversized_frame): a misconfigured or hostile camera cannot make the "
        "agent hold gigabyte frames. The default takes a 4K camera (8.3 MP) with room to "
        "spare; an 8K one (33 MP) needs it raised.",
    )


def _valid_frame(frame: Any) -> TypeGuard[npt.NDArray[np.uint8]]:
    return (
        isinstance(frame, np.ndarray)
        and frame.ndim == 3
        and frame.shape[2] == 3
        and frame.dtype == np.uint8
        and frame.shape[0] > 0
        and frame.shape[1] > 0
    )


class CameraSource:
    """Pulls frames on the caller's thread; never returns a frame that failed to decode.

    A read may overrun its timeout by one frame interval of a live stream (OpenCV blocks in
    ``grab``), or by ``timeout_s`` when a network stream hangs.
    """

    def __init__(self, config: CameraSourceConfig) -> None:
        self.config = config
        self.name = config.name
        self.counters: collections.Counter[str] = collections.Counter()
        self.is_file = isinstance(config.uri, str) and "://" not in config.uri
        self._backoff = ReconnectBackoff(config.reconnect_min_s, config.reconnect_max_s)
        self._gate = MotionGate(config.motion) if config.motion.enabled else None
        self._cap: cv2.VideoCapture | None = None
        self._ever_opened = False
        self._closed = False
        self._bad_streak = 0
        self._frame_no = 0
        self._period = 1.0 / config.fps
        self._next_due: float | None = None
        self._last_t: float | None = None
        self._frame_dt: float | None = None
        self._anchor: float | None = None
        self._pending: tuple[float, Sample] | None = None
        self._looping = False
        self._segment_frames = 0
        self._max_pixels = pixel_limit(config.max_megapixels)
        self._oversize_logged = False

    # -- opening -------------------------------------------------------------------------

    def _open_capture(self) -> cv2.VideoCapture | None:
        uri = self.config.uri
        if isinstance(uri, int):
            cap = cv2.VideoCapture(uri)
        elif self.is_file and not Path(uri).is_file():
            return None
        else:
            ms = int(self.config.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > self._max_pixels:  # 0x0 when the stream does not say: read on
            cap.release()
            self.counters["oversized_stream"] += 1
            log.error(
                "camera %s: %s sends %dx%d frames (%.1f MP), over max_megapixels %.1f: "
                "not reading it",
                self.name,
                masked_uri(uri),
                width,
                height,
                width * height / 1e6,
                self.config.max_megapixels,
            )
            return None
        return cap

    def _open_before(self, deadline: float) -> bool:
        wait = self._backoff.wait_left()
        if wait > 0:
            left = deadline - time.monotonic()
            if wait > left:
                time.sleep(max(0.0, left))
                return False
            time.sleep(wait)
        cap = self._open_capture()
        if cap is None:
            self.counters["reconnect_failures" if self._ever_opened else "open_failures"] += 1
            delay = self._backoff.failed()
            log.warning(
                "camera %s: cannot open %s; next try in %.1fs",
                self.name,
                masked_uri(self.config.uri),
                delay,
            )
            return False
        if self._looping:
            self._looping = False
        elif self._ever_opened:
            self.counters["reconnects"] += 1
            log.info("camera %s: reconnected to %s", self.name, masked_uri(self.config.uri))
        self._ever_opened = True
        self._cap = cap
        self._new_segment()
        return True

    def _new_segment(self) -> None:
        self._bad_streak = 0
        self._segment_frames = 0
        self._last_t = None
        self._next_due = None
        self._anchor = None
        self._oversize_logged = False
        if self._gate is not None:
            self._gate.reset()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # -- reading -------------------------------------------------------------------------

    def read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._closed:
                raise SourceClosed(f"camera {self.name} closed")
            if self._pending is not None:
                return self._release_pending(deadline)
            if self._cap is None and not self._open_before(deadline):
                return None
            sample = self._read_one()
            if sample is not None:
                self._backoff.succeeded()
                if self._pending is None:
                    return sample
            if time.monotonic() >= deadline:
                return None

    def _release_pending(self, deadline: float) -> Sample | None:
        assert self._pending is not None
        due, sample = self._pending
        now = time.monotonic()
        if due > deadline:
            time.sleep(max(0.0, deadline - now))
            return None
        time.sleep(max(0.0, due - now))
        self._pending = None
        return sample

    def _frame_time(self, cap: cv2.VideoCapture) -> float:
        if self.is_file:
            return float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        return time.monotonic()

    def _read_one(self) -> Sample | None:
        """One grab; a sample when that frame is due, decodes, and is not a still scene."""
        cap = self._cap
        assert cap is not None
        if not cap.grab():
            self._bad_streak += 1
            if self._bad_streak >= self.config.failures_before_end:
                self._stream_ended()
            return None
        if self._bad_streak:
            self.counters["undecodable_frame"] += self._bad_streak
            self._bad_streak = 0
        self._frame_no += 1
        self._segment_frames += 1
        self.counters["frames_grabbed"] += 1
        t = self._frame_time(cap)
        if not self._due(t):
            self.counters["rate_skipped"] += 1
            return None
        ok, frame = cap.retrieve()
        if not ok or not _valid_frame(frame):
            self.counters["undecodable_frame"] += 1
            return None
        if frame.shape[0] * frame.shape[1] > self._max_pixels:
            self._oversized(frame.shape[1], frame.shape[0])
            return None
        if self._gate is not None and self._gate.is_still(frame, t):
            self.counters["motion_skipped"] += 1
            return None
        self.counters["samples"] += 1
        sample = Sample(ts=datetime.now(UTC), input_id=f"frame-{self._frame_no:06d}", frame=frame)
        if self.is_file and self.config.pace == "realtime":
            if self._anchor is None:
                self._anchor = time.monotonic() - t
            self._pending = (self._anchor + t, sample)
        return sample

    def _oversized(self, width: int, height: int) -> None:
        self.counters["oversized_frame"] += 1
        if not self._oversize_logged:  # once per connection, not once per frame
            self._oversize_logged = True
            log.error(
                "camera %s: dropping %dx%d frames (%.1f MP), over max_megapixels %.1f",
                self.name,
                width,
                height,
                width * height / 1e6,
                self.config.max_megapixels,
            )

    def _due(self, t: float) -> bool:
        """Take the frame nearest each due time: the rate holds on average, whatever the
        source's own rate, and arrival jitter of a live stream does not drop every other frame.
        """
        last = self._last_t
        self._last_t = t
        if last is not None and t > last:
            dt = t - last
            self._frame_dt = dt if self._frame_dt is None else 0.9 * self._frame_dt + 0.1 * dt
        if self._next_due is None:
            self._next_due = t + self._period
            return True
        slack = 0.5 * min(self._period, self._frame_dt or self._period)
        if t < self._next_due - slack:
            return False
        self._next_due += self._period
        if self._next_due <= t - slack:  # fell behind (a stall, a gap): restart the grid
            self._next_due = t + self._period
        return True

    def _stream_ended(self) -> None:
        self.counters["stream_ends"] += 1
        self._release()
        mode = self.config.on_end
        if mode == "close":
            self._closed = True
            raise SourceClosed(f"camera {self.name}: {masked_uri(self.config.uri)} ended")
        if mode == "loop" and self.is_file and self._segment_frames > 0:
            self.counters["loops"] += 1
            self._looping = True
            return  # reopened at once on the next read: the backoff is untouched
        delay = self._backoff.failed()
        log.warning(
            "camera %s: stream %s dropped; reconnecting in %.1fs",
            self.name,
            masked_uri(self.config.uri),
            delay,
        )

    def close(self) -> None:
        self._closed = True
        self._release()
