"""The ``updates`` section of the device config: keys, folders, limits and probation rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from edge_agent.config.base import ConfigModel
from edge_agent.protocol.topics import IDENT_PATTERN

MIB = 1024 * 1024
ChannelName = Annotated[str, StringConstraints(pattern=IDENT_PATTERN)]
PublisherName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class DownloadConfig(ConfigModel):
    """How model files are fetched: resumable HTTP with bounded retries."""

    timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        title="Socket timeout",
        description="Seconds without progress before one download attempt is abandoned.",
    )
    attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        title="Attempts",
        description="Tries per URL; each retry resumes with a Range request where possible.",
    )
    backoff_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        title="First backoff",
        description="Wait before the first retry; doubles per retry with jitter, capped at 30 s.",
    )
    chunk_bytes: int = Field(
        default=256 * 1024,
        ge=4096,
        le=16 * MIB,
        title="Chunk size",
        description="Bytes read per step; the disk budget and size cap are checked per chunk.",
    )


class SmokeConfig(ConfigModel):
    """Checks run on a candidate before it serves a single live frame."""

    samples: int = Field(
        default=8,
        ge=1,
        le=1000,
        title="Smoke samples",
        description="Synthetic inputs run through the candidate; every output must be finite.",
    )
    latency_budget_factor: float = Field(
        default=1.5,
        gt=0,
        le=100,
        title="Latency budget factor",
        description=(
            "The candidate's median latency may be at most this multiple of the model spec's "
            "latency_budget_ms."
        ),
    )


class ProbationConfig(ConfigModel):
    """How long a newly activated model is watched on live inputs, and what fails it.

    Probation ends after ``frames`` live predictions or ``seconds``, whichever comes last,
    so a quiet device still judges the model on real traffic.
    """

    frames: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        title="Probation frames",
        description="Live predictions the new model must serve before it can be committed.",
    )
    seconds: float = Field(
        default=0.0,
        ge=0,
        le=7 * 24 * 3600,
        title="Probation seconds",
        description="Minimum time on probation (0 = decided by frames alone).",
    )
    timeout_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 24 * 3600,
        title="Probation timeout",
        description="Longest probation; if too few live inputs came by then, on_timeout decides.",
    )
    on_timeout: Literal["commit", "rollback"] = Field(
        default="commit",
        title="On timeout",
        description="What a quiet probation ends in: the model passed smoke and showed no "
        "fault, so 'commit' by default; 'rollback' for devices that must see proof.",
    )
    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        title="Max error rate",
        description="Share of live calls that may raise before the model is rolled back.",
    )
    max_nan_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        title="Max NaN rate",
        description="Share of live outputs that may hold NaN or infinity.",
    )
    latency_budget_factor: float = Field(
        default=2.0,
        gt=0,
        le=100,
        title="Latency budget factor",
        description="Live p95 latency may be at most this multiple of the spec's latency budget.",
    )
    min_samples_to_fail: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        title="Samples before judging rates",
        description="Rates are only judged once this many live calls were seen (one NaN in "
        "three frames is noise, not a verdict), except a zero-tolerance NaN limit.",
    )
    mode: Literal["shadow", "live"] = Field(
        default="shadow",
        title="Probation mode",
        description="'shadow': the committed model keeps answering while the new one runs "
        "beside it on the same live inputs, and the device switches only once probation "
        "passes, so a rejected model never answers; 'live': the new model answers during "
        "probation (for models whose labels cannot be compared with the previous one).",
    )
    shadow: bool = Field(
        default=False,
        title="Shadow comparison (live mode)",
        description="In 'live' mode, also run the previous model on live inputs and compare "
        "labels ('shadow' mode always compares).",
    )
    max_disagreement: float = Field(
        default=0.5,
        ge=0,
        le=1,
        title="Max disagreement",
        description="Share of compared live inputs where the two models' labels may differ "
        "before the new model is rolled back.",
    )


class UpdaterConfig(ConfigModel):
    """Model delivery on the device: who to trust, where files live, and what to accept."""

    enabled: bool = Field(
        default=True,
        title="Updates enabled",
        description="Subscribe to the model's release topic and apply accepted releases.",
    )
    fleet_public_key: Path = Field(
        title="Fleet public key",
        description="PEM file of the fleet's ed25519 release key, written at provisioning.",
    )
    trusted_publishers: list[PublisherName] = Field(
        default_factory=lambda: ["cloud"],
        min_length=1,
        title="Trusted publishers",
        description="Identities allowed to publish releases; a manifest naming another "
        "publisher is refused even when its signature is valid.",
    )
    models_dir: Path = Field(
        title="Models directory",
        description="Where accepted model versions, the active pointer and the state live.",
    )
    staging_dir: Path | None = Field(
        default=None,
        title="Staging directory",
        description="Where downloads land before verification (default: models_dir/staging). "
        "Must be on the same filesystem as models_dir so activation is a rename.",
    )
    disk_budget_mb: float = Field(
        default=512.0,
        gt=0,
        le=1_000_000,
        title="Disk budget (MiB)",
        description="Most space kept models plus a download in progress may take.",
    )
    max_model_mb: float = Field(
        default=64.0,
        gt=0,
        le=512,
        title="Max model size (MiB)",
        description="Releases announcing a larger file are refused; downloads stop at it.",
    )
    keep_versions: int = Field(
        default=3,
        ge=2,
        le=50,
        title="Versions kept",
        description="Model versions kept on disk (the active one and its predecessors, for "
        "rollback); older ones are pruned, also earlier when the disk budget needs the room.",
    )
    channels: list[ChannelName] = Field(
        default_factory=lambda: ["stable"],
        min_length=1,
        title="Allowed channels",
        description="Release channels this device takes (e.g. stable, beta).",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        title="Inference threads",
        description="onnxruntime intra-op threads for candidate sessions.",
    )
    download: DownloadConfig = Field(
        default_factory=DownloadConfig,
        title="Download",
        description="HTTP download behaviour.",
    )
    smoke: SmokeConfig = Field(
        default_factory=SmokeConfig,
        title="Smoke test",
        description="Checks before activation.",
    )
    probation: ProbationConfig = Field(
        default_factory=ProbationConfig,
        title="Probation",
        description="Checks on live inputs after activation.",
    )

    @model_validator(mode="after")
    def _limits_consistent(self) -> UpdaterConfig:
        if self.max_model_mb > self.disk_budget_mb:
            raise ValueError(
                f"max_model_mb ({self.max_model_mb}) exceeds disk_budget_mb "
                f"({self.disk_budget_mb}): no release that size could ever be stored"
            )
        return self

    @property
    def staging(self) -> Path:
        return self.staging_dir if self.staging_dir is not None else self.models_dir / "staging"

    @property
    def disk_budget_bytes(self) -> int:
        return int(self.disk_budget_mb * MIB)

    @property
    def max_model_bytes(self) -> int:
        return int(self.max_model_mb * MIB)
