"""Camera source and motion gate config, kept apart from the capture: it loads without OpenCV."""

# The device config's source union names every source type, so this module loads in every
# agent, a weather station's too: it must import where edge-agent[camera] (OpenCV) is not.

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.config.base import ConfigModel
from edge_agent.features.image_header import DEFAULT_MAX_MEGAPIXELS, MAX_CONFIGURABLE_MEGAPIXELS

OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class MotionGateConfig(ConfigModel):
    """A frame passes when enough pixels changed since the last frame that passed."""

    enabled: bool = Field(
        default=False,
        title="Enabled",
        description="Skip frames of a still scene (counted as motion_skipped).",
    )
    pixel_delta: int = Field(
        default=20,
        ge=1,
        le=255,
        title="Pixel delta",
        description="Grey-level change (0-255) for a pixel to count as changed.",
    )
    min_changed_fraction: float = Field(
        default=0.01,
        gt=0,
        le=1,
        title="Minimum changed fraction",
        description="Share of changed pixels that counts as motion.",
    )
    max_still_s: float | None = Field(
        default=60.0,
        gt=0,
        title="Maximum still time",
        description="Let one frame through after this many seconds without motion, so a "
        "still scene is still watched (and drift still sees it); null never does.",
    )
    width: int = Field(
        default=64,
        ge=8,
        le=640,
        title="Comparison width",
        description="Width in pixels of the grey copy compared; smaller is cheaper and "
        "ignores sensor noise better.",
    )


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
        description="Open and read timeout for network streams (s). A connection dropped "
        "for a stall still holds its capture until OpenCV gives up on it, at most this long.",
    )
    stall_timeout_s: float = Field(
        default=4.0,
        ge=0.5,
        le=300,
        title="Stall timeout",
        description="A live camera that keeps its connection but sends no frame for this "
        "long is frozen: the connection is dropped and a new one made (with the backoff). "
        "Keep it above the camera's longest gap between frames.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        default="tcp",
        title="RTSP transport",
        description="RTP inside the RTSP TCP connection (a dead camera is noticed at once, "
        "nothing is lost to NAT or packet loss) or over UDP.",
    )
    rtsp_fast_start: bool = Field(
        default=True,
        title="RTSP fast start",
        description="Decode from the first packets instead of probing about two seconds "
        "of stream on every (re)connect (FFmpeg probesize 32, low-delay decoding). Turn it "
        f"off for a camera that will not open with it. A value of {OPTIONS_ENV} in the "
        "agent's environment overrides both RTSP options.",
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
