"""Device config of visits and per-frame predictions (the ``visits`` section of the YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_agent.config.base import ConfigModel

PredictionsMode = Literal["auto", "all", "pets_only", "none"]


class VisitsConfig(ConfigModel):
    """Visits of the camera's subject, published as start and end events with the best frame
    kept as a snapshot (as a video recorder reports them), and which per-frame predictions
    are still published. Cameras only: a weather station tracks no visits."""

    enabled: bool = Field(
        default=True,
        title="Enabled",
        description="Track visits on a camera (off: no visit events, no snapshots).",
    )
    predictions: PredictionsMode = Field(
        default="auto",
        title="Per-frame predictions",
        description="Which predictions are published: all; pets_only (frames not answered "
        "with the model's absent label, e.g. no_pet); none (visits only). auto is pets_only "
        "for a model with a presence rule and all for one without (every frame shows its "
        "subject then).",
    )
    min_frames: int = Field(
        default=2,
        ge=1,
        le=1000,
        title="Frames to start",
        description="Consecutive frames showing the subject before a visit starts (one "
        "stray frame is not a visit).",
    )
    quiet_s: float = Field(
        default=10.0,
        gt=0,
        le=86_400,
        title="Quiet time (s)",
        description="A visit ends once this long passed without a frame showing the "
        "subject (frame capture times; when frames stop coming, the device clock).",
    )
    snapshots: bool = Field(
        default=True,
        title="Snapshots",
        description="Keep the visit's best frame (highest confidence) as a JPEG.",
    )
    directory: Path = Field(
        default=Path("visits"),
        title="Directory",
        description="Where snapshots and visit records are kept; relative to the agent's "
        "data dir (the outbox's folder).",
    )
    snapshot_max_bytes: int = Field(
        default=200_000,
        ge=8_000,
        le=10_000_000,
        title="Snapshot cap (bytes)",
        description="A snapshot is re-encoded at lower quality, then downscaled, until it fits.",
    )
    snapshot_max_side: int = Field(
        default=1280,
        ge=64,
        le=8192,
        title="Snapshot side (px)",
        description="Longest side of a snapshot; larger frames are downscaled first.",
    )
    snapshot_quality: int = Field(
        default=85,
        ge=30,
        le=100,
        title="JPEG quality",
        description="Starting JPEG quality (lowered, down to 40, to meet the byte cap).",
    )
    max_files: int = Field(
        default=500,
        ge=1,
        le=1_000_000,
        title="Visits kept",
        description="Visit records (each with its snapshot) kept; the oldest go first.",
    )
    max_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=64 * 1024,
        title="Disk budget (bytes)",
        description="Bytes the records and snapshots may use; the oldest go first.",
    )
    upload: bool = Field(
        default=False,
        title="Upload snapshots",
        description="Also queue each snapshot with the drift capture's samples, which its "
        "uploader sends to drift.capture.upload_url (reason 'visit', same bytes and sha256). "
        "Needs drift.capture enabled with an upload URL.",
    )


def publishes_prediction(mode: PredictionsMode, absent_label: str | None, label: str) -> bool:
    """Whether a prediction answering ``label`` is published under ``mode`` for a model whose
    absent label is ``absent_label`` (None: the model always sees its subject)."""
    if mode == "none":
        return False
    if mode == "all" or absent_label is None:
        return True
    return label != absent_label  # pets_only, and auto for a model with a presence rule
