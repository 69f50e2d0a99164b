"""Camera source: OpenCV capture of a file, an RTSP/HTTP URL or a device, sampled to a rate."""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.features.image_header import pixel_limit
from edge_agent.sources.backoff import ReconnectBackoff
from edge_agent.sources.camera_config import OPTIONS_ENV, CameraSourceConfig
from edge_agent.sources.events import StreamEvent
from edge_agent.sources.motion import MotionGate
from edge_agent.sources.sample import Sample, SourceClosed

__all__ = ["FAST_START_OPTIONS", "OPTIONS_ENV", "CameraSource", "CameraSourceConfig", "masked_uri"]

log = logging.getLogger(__name__)

# The password runs to the last "@" before the path, as FFmpeg reads it: "p@ss" is hidden too.
_CREDENTIALS = re.compile(r"(?<=://)([^:/@]+):([^/]*)@")

# Probe 32 bytes instead of ~2 s of stream before the first frame: the frame size comes from
# the SDP's parameter sets. Measured against GStreamer's RTSP server: first frame 0.14 s after
# connecting, against 1.9 s with OpenCV's defaults (and 2.1 s with fflags nobuffer).
FAST_START_OPTIONS = "probesize;32|flags;low_delay"
MAX_EVENTS = 100  # kept for the agent; older ones are dropped (events_dropped)
MAX_ABANDONED_READERS = 2  # stalled connections still waiting for OpenCV to return
READY_SAMPLES = 2  # samples a live reader holds for the model before the oldest is dropped
_TICK_S = 0.1  # how often a waiting read() looks at the watchdog


def masked_uri(uri: str | int) -> str:
    """The URI with any password replaced, for logs and errors."""
    return _CREDENTIALS.sub(r"\1:***@", str(uri))


class _CaptureOptions:
    """OpenCV reads FFmpeg's options from one process-wide variable as a capture opens.

    Opens wanting the same options run together; one wanting others waits until they have
    read the variable, and the variable is removed again once no open is running, so other
    code opening a video meets OpenCV's defaults. A value the operator put in the
    environment is left alone and wins.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._opening = 0
        self.operator_value = os.environ.get(OPTIONS_ENV)
        self._value = self.operator_value

    @contextmanager
    def using(self, value: str | None) -> Iterator[None]:
        if self.operator_value is not None:
            yield
            return
        with self._cond:
            while self._opening and self._value != value:
                self._cond.wait()
            if value is None:
                os.environ.pop(OPTIONS_ENV, None)
            else:
                os.environ[OPTIONS_ENV] = value
            self._value = value
            self._opening += 1
        try:
            yield
        finally:
            with self._cond:
                self._opening -= 1
                if self._opening == 0:
                    os.environ.pop(OPTIONS_ENV, None)
                    self._value = None
                self._cond.notify_all()


_CAPTURE_OPTIONS = _CaptureOptions()


def _valid_frame(frame: Any) -> TypeGuard[npt.NDArray[np.uint8]]:
    return (
        isinstance(frame, np.ndarray)
        and frame.ndim == 3
        and frame.shape[2] == 3
        and frame.dtype == np.uint8
        and frame.shape[0] > 0
        and frame.shape[1] > 0
    )


class _StreamReader:
    """One connection to a live camera, on a thread of its own: opens it, grabs every frame.

    OpenCV cannot interrupt a blocked ``grab`` or open safely from another thread, so a
    stalled reader is abandoned rather than stopped: it releases its capture as soon as the
    blocked call returns (within ``timeout_s``) and touches nothing of its source after that.
    """

    def __init__(self, source: CameraSource, number: int) -> None:
        self.source = source
        self.state: Literal["opening", "open", "failed", "ended"] = "opening"
        self.abandoned = False
        self.started_at = time.monotonic()
        self.thread = threading.Thread(
            target=self._run, name=f"camera-{source.name}-{number}", daemon=True
        )

    def _run(self) -> None:
        source = self.source
        cap = source._open_capture()
        try:
            if cap is None or not source._reader_opened(self, cap):
                return
            while source._reader_grabbed(self, cap, cap.grab()):
                pass
        finally:
            if cap is not None:
                cap.release()
            source._reader_done(self)


class CameraSource:
    """Never returns a frame that failed to decode.

    A file is read on the caller's thread. A live camera (a stream URL or a device) is read
    by a ``_StreamReader`` thread that hands samples over, so ``read`` keeps its timeout
    whatever the network does; a watchdog in ``read`` notices a stream that stopped (lost)
    or stalled (frozen), reconnects with the backoff, and records ``StreamEvent``s for the
    agent (``pop_events``). ``counters`` and ``pop_events`` may be read from other threads.
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
        # Live cameras: the reader thread and the watchdog share this state under _lock.
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._ready_cond = threading.Condition(self._lock)  # samples (or news) for read()
        self._room_cond = threading.Condition(self._lock)  # room for the reader's next sample
        self._ready: collections.deque[Sample] = collections.deque(maxlen=READY_SAMPLES)
        self._reader: _StreamReader | None = None
        self._abandoned: list[_StreamReader] = []
        self._readers_started = 0
        self._held_logged = False
        self._last_frame_at = 0.0
        self._down_since: float | None = None
        self._events: collections.deque[StreamEvent] = collections.deque(maxlen=MAX_EVENTS)

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:  # two threads may count at once; Counter's += is not atomic
            self.counters[name] += n

    # -- opening -------------------------------------------------------------------------

    def ffmpeg_options(self) -> str | None:
        """What OpenCV's FFmpeg capture is given for this camera (None: its defaults)."""
        uri = self.config.uri
        if not isinstance(uri, str) or not uri.lower().startswith(("rtsp://", "rtsps://")):
            return None
        options = f"rtsp_transport;{self.config.rtsp_transport}"
        if self.config.rtsp_fast_start:
            options += "|" + FAST_START_OPTIONS
        return options

    def _open_capture(self) -> cv2.VideoCapture | None:
        uri = self.config.uri
        if isinstance(uri, int):
            cap = cv2.VideoCapture(uri)
        elif self.is_file and not Path(uri).is_file():
            return None
        else:
            ms = int(self.config.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            with _CAPTURE_OPTIONS.using(self.ffmpeg_options()):
                cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > self._max_pixels:  # 0x0 when the stream does not say: read on
            cap.release()
            self._count("oversized_stream")
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
            self._open_failed()
            return False
        if self._looping:
            self._looping = False
        else:
            self._opened()
        self._cap = cap
        self._new_segment()
        return True

    def _open_failed(self) -> None:
        self._count("reconnect_failures" if self._ever_opened else "open_failures")
        delay = self._backoff.failed()
        log.warning(
            "camera %s: cannot open %s; next try in %.1fs",
            self.name,
            masked_uri(self.config.uri),
            delay,
        )

    def _opened(self) -> None:
        if self._ever_opened:
            self._count("reconnects")
            log.info("camera %s: reconnected to %s", self.name, masked_uri(self.config.uri))
        self._ever_opened = True

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
        if not self.is_file:
            return self._read_live(deadline)
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
        """One grab of a file; a sample when that frame is due, decodes, and is not still."""
        cap = self._cap
        assert cap is not None
        sample = self._take(cap, cap.grab())
        if self._bad_streak >= self.config.failures_before_end:
            self._stream_ended()
            return None
        if sample is None:
            return None
        self._count("samples")
        if self.config.pace == "realtime":
            t = self._last_t if self._last_t is not None else 0.0  # this frame's, set by _due
            if self._anchor is None:
                self._anchor = time.monotonic() - t
            self._pending = (self._anchor + t, sample)
        return sample

    def _take(self, cap: cv2.VideoCapture, grabbed: bool) -> Sample | None:
        """The grabbed frame as a sample when it is due, decodes, and is not a still scene."""
        if not grabbed:
            self._bad_streak += 1
            return None
        if self._bad_streak:
            self._count("undecodable_frame", self._bad_streak)
            self._bad_streak = 0
        self._frame_no += 1
        self._segment_frames += 1
        self._count("frames_grabbed")
        t = self._frame_time(cap)
        if not self._due(t):
            self._count("rate_skipped")
            return None
        ok, frame = cap.retrieve()
        if not ok or not _valid_frame(frame):
            self._count("undecodable_frame")
            return None
        if frame.shape[0] * frame.shape[1] > self._max_pixels:
            self._oversized(frame.shape[1], frame.shape[0])
            return None
        if self._gate is not None and self._gate.is_still(frame, t):
            self._count("motion_skipped")
            return None
        return Sample(ts=datetime.now(UTC), input_id=f"frame-{self._frame_no:06d}", frame=frame)

    def _oversized(self, width: int, height: int) -> None:
        self._count("oversized_frame")
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
        self._count("stream_ends")
        self._release()
        mode = self.config.on_end
        if mode == "close":
            self._closed = True
            raise SourceClosed(f"camera {self.name}: {masked_uri(self.config.uri)} ended")
        if mode == "loop" and self.is_file and self._segment_frames > 0:
            self._count("loops")
            self._looping = True
            return  # reopened at once on the next read: the backoff is untouched
        delay = self._backoff.failed()
        log.warning(
            "camera %s: stream %s dropped; reconnecting in %.1fs",
            self.name,
            masked_uri(self.config.uri),
            delay,
        )

    # -- live cameras: reader thread and watchdog ------------------------------------------

    def _read_live(self, deadline: float) -> Sample | None:
        with self._lock:
            while True:
                if self._closed:
                    raise SourceClosed(f"camera {self.name} closed")
                if self._ready:
                    sample = self._ready.popleft()
                    self._room_cond.notify_all()
                    self._count("samples")
                    return sample
                self._watch(time.monotonic())
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._ready_cond.wait(min(left, _TICK_S))

    def _watch(self, now: float) -> None:
        """The watchdog, run by ``read`` under the lock: settles what the reader reported,
        drops a stalled connection, and starts a new one when the backoff allows."""
        reader = self._reader
        if reader is not None and reader.state == "failed":
            self._reader = None
            self._open_failed()
        elif reader is not None and reader.state == "ended":
            self._reader = None
            self._count("stream_ends")
            self._outage("lost", f"{masked_uri(self.config.uri)} stopped sending")
        elif reader is not None and reader.state == "open":
            silent = now - self._last_frame_at
            if silent > self.config.stall_timeout_s:
                self._abandon(reader)
                detail = f"{masked_uri(self.config.uri)} sent no frame for {silent:.1f}s"
                self._outage("frozen", detail)
        elif reader is not None and now - reader.started_at > (
            self.config.timeout_s + self.config.stall_timeout_s
        ):  # an open that outlived its own timeout
            self._abandon(reader)
            self._open_failed()
        if self._reader is None and self._backoff.wait_left() <= 0:
            self._start_reader()

    def _start_reader(self) -> None:
        self._abandoned = [r for r in self._abandoned if r.thread.is_alive()]
        if len(self._abandoned) >= MAX_ABANDONED_READERS:
            if not self._held_logged:
                self._held_logged = True
                log.warning(
                    "camera %s: %d stalled connections to %s have not returned yet; "
                    "waiting for them before connecting again",
                    self.name,
                    len(self._abandoned),
                    masked_uri(self.config.uri),
                )
            return
        self._held_logged = False
        self._readers_started += 1
        self._reader = _StreamReader(self, self._readers_started)
        self._reader.thread.start()

    def _abandon(self, reader: _StreamReader, count: bool = True) -> None:
        reader.abandoned = True
        if self._reader is reader:
            self._reader = None
        if reader.thread.is_alive():
            self._abandoned.append(reader)
        if count:
            self._count("readers_abandoned")
        self._room_cond.notify_all()

    def _outage(self, state: Literal["lost", "frozen"], detail: str) -> None:
        """One event per outage: reconnects failing meanwhile are counted, not announced.
        ``on_end: close`` closes the source instead of reconnecting (SourceClosed)."""
        if self._down_since is None:
            self._down_since = self._last_frame_at
            self._count(f"stream_{state}")
            self._event(state, detail)
        if self.config.on_end == "close":
            self._closed = True
            log.warning("camera %s: %s; closing", self.name, detail)
            raise SourceClosed(f"camera {self.name}: {detail}")
        delay = self._backoff.failed()
        log.warning("camera %s: %s; reconnecting in %.1fs", self.name, detail, delay)

    def _event(
        self, state: Literal["lost", "frozen", "restored"], detail: str, **kw: float
    ) -> None:
        if len(self._events) == self._events.maxlen:
            self._count("events_dropped")
        self._events.append(StreamEvent(self.name, state, datetime.now(UTC), detail, **kw))

    def pop_events(self) -> list[StreamEvent]:
        """The stream events since the last call, oldest first (at most ``MAX_EVENTS``)."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def _reader_opened(self, reader: _StreamReader, cap: cv2.VideoCapture) -> bool:
        with self._lock:
            if reader.abandoned or self._closed:
                return False
            self._opened()
            self._new_segment()
            self._last_frame_at = time.monotonic()
            reader.state = "open"
            return True

    def _reader_grabbed(self, reader: _StreamReader, cap: cv2.VideoCapture, ok: bool) -> bool:
        """Takes one grab's outcome on the reader's thread; False: that reader is done."""
        with self._lock:
            if reader.abandoned or self._closed:
                return False
            if ok:
                self._frame_arrived(time.monotonic())
            sample = self._take(cap, ok)
            if self._bad_streak >= self.config.failures_before_end:
                reader.state = "ended"
                self._ready_cond.notify_all()
                return False
            if sample is not None:
                self._hand_over(reader, sample)
            return True

    def _frame_arrived(self, now: float) -> None:
        self._last_frame_at = now
        self._backoff.succeeded()
        if self._down_since is None:
            return
        down = now - self._down_since
        self._down_since = None
        self._count("stream_restored")
        log.info("camera %s: frames again after %.1fs", self.name, down)
        detail = f"{masked_uri(self.config.uri)} sends frames again after {down:.1f}s"
        self._event("restored", detail, down_s=round(down, 3))

    def _hand_over(self, reader: _StreamReader, sample: Sample) -> None:
        """Queue a sample for ``read``: waits up to a sample period (at least 0.1 s) for the
        model to take the one before, then drops the oldest: a slow model gets fresh frames,
        never a growing backlog."""
        until = time.monotonic() + min(1.0, max(0.1, self._period))
        while len(self._ready) >= READY_SAMPLES and not (reader.abandoned or self._closed):
            left = until - time.monotonic()
            if left <= 0:
                self._ready.popleft()
                self._count("queue_overflow")
                break
            self._room_cond.wait(left)
        if reader.abandoned or self._closed:
            return
        self._ready.append(sample)
        self._last_frame_at = max(self._last_frame_at, time.monotonic())  # waiting ≠ a stall
        self._ready_cond.notify_all()

    def _reader_done(self, reader: _StreamReader) -> None:
        """The reader's thread ends: an open that gave nothing failed, and a connection
        left other than by the watchdog or ``close`` ended (an error in it included)."""
        with self._lock:
            if not reader.abandoned:
                if reader.state == "opening":
                    reader.state = "failed"
                elif reader.state == "open":
                    reader.state = "ended"
            self._ready_cond.notify_all()

    def close(self) -> None:
        """Stops reading; a live reader blocked in OpenCV releases its capture when the call
        returns (waited for up to a second here, at most ``timeout_s`` in all)."""
        with self._lock:
            self._closed = True
            reader = self._reader
            if reader is not None:
                self._abandon(reader, count=False)
            waiting = [r.thread for r in self._abandoned]
            self._ready.clear()
            self._ready_cond.notify_all()
        self._release()
        until = time.monotonic() + 1.0
        for thread in waiting:
            thread.join(max(0.0, until - time.monotonic()))
