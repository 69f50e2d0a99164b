"""A real RTSP camera for tests: GStreamer's RTSP server in a subprocess of the system python3.

- ``rtsp_unavailable()``: why the server cannot run here (None when it can); tests skip with it.
- ``h264_clip(folder)``: an H.264 MP4 of generated moving frames (``media.moving_frames``
  written as an AVI, encoded with x264 by ``rtsp_serve.py encode``), long enough that no
  test reaches its end.
- ``RtspServer(clip)``: serves the clip on a free loopback port; ``kill`` (SIGKILL, a power
  cut), ``freeze``/``thaw`` (SIGSTOP/SIGCONT, a hung camera), ``start`` again on the same port,
  and ``close`` always leaves no process behind.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.media import moving_frames, write_video

SYSTEM_PYTHON = "/usr/bin/python3"
SERVE_SCRIPT = Path(__file__).with_name("rtsp_serve.py")
DEBIAN_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"
)


class RtspUnavailable(RuntimeError):
    """The RTSP server did not start or encode."""


@functools.cache
def rtsp_unavailable() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None when it can."""
    why = f"(scripts/test.sh installs them as root: apt-get install {DEBIAN_PACKAGES})"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no {SYSTEM_PYTHON} to run GStreamer's RTSP server {why}"
    probe = subprocess.run(
        [SYSTEM_PYTHON, str(SERVE_SCRIPT), "probe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        said = (probe.stdout + probe.stderr).strip().splitlines()
        return f"{said[-1] if said else 'GStreamer RTSP server missing'} {why}"
    return None


def h264_clip(
    folder: Path, seconds: float = 120.0, fps: int = 15, size: tuple[int, int] = (320, 240)
) -> Path:
    """An H.264 MP4 (a key frame a second) of a square crossing a plain ground."""
    folder.mkdir(parents=True, exist_ok=True)
    avi = folder / "clip.avi"
    mp4 = folder / "clip.mp4"
    cycle = moving_frames(10, size)  # the square's path repeats every 10 frames
    write_video(avi, cycle * int(seconds * fps / len(cycle)), fps=fps)
    command = [SYSTEM_PYTHON, str(SERVE_SCRIPT), "encode", "--src", str(avi), "--dst", str(mp4)]
    done = subprocess.run(
        [*command, "--fps", str(fps)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    avi.unlink()
    if done.returncode != 0 or not mp4.is_file():
        raise RtspUnavailable(f"cannot encode the test clip: {done.stderr.strip()[-500:]}")
    return mp4


class RtspServer:
    """One RTSP server process serving ``clip`` at ``rtsp://127.0.0.1:PORT/cam``."""

    def __init__(self, clip: Path, mount: str = "/cam") -> None:
        self.clip = clip
        self.mount = mount
        self.host = "127.0.0.1"
        self.port = 0  # chosen by the first start, kept by later ones
        self.log_path = clip.with_name(f"rtsp-server-{os.getpid()}.log")
        self._proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def url(self, userinfo: str | None = None) -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"rtsp://{at}{self.host}:{self.port}{self.mount}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> RtspServer:
        """Start it (again, on the same port after ``kill``); returns once it listens."""
        if self.running:
            raise RtspUnavailable("the RTSP server is running already")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.port = self._launch(deadline)
                return self
            except RtspUnavailable:
                # After a kill the port can stay taken for a moment: try again until the end.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _launch(self, deadline: float) -> int:
        command = [SYSTEM_PYTHON, str(SERVE_SCRIPT), "serve", "--file", str(self.clip)]
        command += ["--port", str(self.port), "--mount", self.mount]
        with self.log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log_file, start_new_session=True
            )
        assert proc.stdout is not None
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(proc.stdout.fileno(), 64)
                if not chunk:
                    break
                line += chunk
        words = line.split()
        if len(words) == 2 and words[0] == b"ready":
            self._proc = proc
            self.frozen = False
            return int(words[1])
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        raise RtspUnavailable(f"the RTSP server did not start: {self.tail_log()}")

    def tail_log(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.splitlines()[-lines:]) or "(empty log)"

    def kill(self) -> None:
        """SIGKILL, as a power cut: connections die without a goodbye."""
        proc, self._proc = self._proc, None
        self.frozen = False
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing, as a hung camera."""
        assert self._proc is not None and self.running
        self._proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self._proc is not None and self.running
        self._proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        self.kill()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
