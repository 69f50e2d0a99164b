"""Device config of the drift monitor (the ``drift`` section) and of opt-in sample capture."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from edge_agent.config.base import ConfigModel

DetectorName = Literal["features", "class_ratio", "confidence", "embedding", "accuracy", "errors"]
FeatureMetric = Literal["psi", "js", "wasserstein"]

# Low-confidence capture level for a model whose spec carries no measured `capture_below`.
FALLBACK_LOW_CONFIDENCE = 0.6

ALL_DETECTORS: tuple[DetectorName, ...] = (
    "features",
    "class_ratio",
    "confidence",
    "embedding",
    "accuracy",
    "errors",
)


class Hysteresis(ConfigModel):
    """Raise at one level and clear only well below it, so a score hovering at the
    threshold does not flap between raised and cleared."""

    raise_at: float = Field(gt=0, title="Raise at", description="Score at or above which to raise.")
    clear_at: float = Field(
        ge=0, title="Clear at", description="Score at or below which a raised alert clears."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Hysteresis:
        if self.clear_at >= self.raise_at:
            raise ValueError(f"clear_at ({self.clear_at}) must be below raise_at ({self.raise_at})")
        return self


class LowerHysteresis(ConfigModel):
    """Hysteresis for quality scores where lower is worse (online accuracy, F1)."""

    raise_below: float = Field(
        ge=0, le=1, title="Raise below", description="Raise when the score falls below this."
    )
    clear_above: float = Field(
        ge=0, le=1, title="Clear above", description="Clear when the score climbs above this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LowerHysteresis:
        if self.clear_above <= self.raise_below:
            raise ValueError(
                f"clear_above ({self.clear_above}) must exceed raise_below ({self.raise_below})"
            )
        return self


class WindowConfig(ConfigModel):
    """How many recent samples a detector compares with its baseline, and how often."""

    size: int = Field(ge=8, le=100_000, title="Window size", description="Samples per window.")
    mode: Literal["sliding", "tumbling"] = Field(
        default="sliding",
        title="Window mode",
        description="Sliding: the newest `size` samples, tested every `step`; tumbling: "
        "disjoint blocks of `size` samples, tested when a block fills.",
    )
    step: int = Field(
        default=1,
        ge=1,
        title="Evaluation step",
        description="Sliding windows are tested every this many samples (1 = every sample).",
    )
    min_samples: int = Field(
        default=8,
        ge=1,
        title="Minimum samples",
        description="No verdict until the window holds at least this many samples.",
    )

    @model_validator(mode="after")
    def _fits(self) -> WindowConfig:
        if self.min_samples > self.size:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds size ({self.size})")
        return self


class Thresholds(ConfigModel):
    """Raise/clear levels per metric; defaults are the calibrated values in docs/drift.md."""

    psi: Hysteresis = Field(
        default=Hysteresis(raise_at=1.2, clear_at=0.7),
        title="PSI",
        description="Population stability index of a feature window against its baseline.",
    )
    js: Hysteresis = Field(
        default=Hysteresis(raise_at=0.55, clear_at=0.4),
        title="Jensen-Shannon",
        description="Jensen-Shannon distance (base 2, 0..1) of a feature window.",
    )
    wasserstein: Hysteresis = Field(
        default=Hysteresis(raise_at=0.65, clear_at=0.4),
        title="Wasserstein",
        description="1-D Wasserstein distance in units of the baseline's standard deviation.",
    )
    seasonal_wasserstein: Hysteresis = Field(
        default=Hysteresis(raise_at=1.3, clear_at=1.0),
        title="Seasonal Wasserstein",
        description="Wasserstein (in the month's standard deviations) of a feature window "
        "against the blend of its months' baselines. Higher than `wasserstein`: a day of "
        "weather is a narrow slice of its month even when nothing is wrong.",
    )
    class_ratio: Hysteresis = Field(
        default=Hysteresis(raise_at=0.3, clear_at=0.15),
        title="Class ratio shift",
        description="Largest relative change of a label's predicted share against validation "
        "(0.3 = a label predicted 30 % more or less often).",
    )
    confidence: Hysteresis = Field(
        default=Hysteresis(raise_at=0.5, clear_at=0.2),
        title="Confidence PSI",
        description="PSI of the window's confidence histogram against validation.",
    )
    seasonal_confidence: Hysteresis = Field(
        default=Hysteresis(raise_at=1.5, clear_at=0.8),
        title="Seasonal confidence PSI",
        description="PSI of the confidence histogram against the blend of its months; a "
        "week of steady rain is confidently forecast, so the level is higher than `confidence`.",
    )
    embedding: Hysteresis = Field(
        default=Hysteresis(raise_at=0.5, clear_at=0.25),
        title="Embedding shift",
        description="Root-mean-square standardised shift of the window's mean embedding.",
    )
    accuracy: LowerHysteresis = Field(
        default=LowerHysteresis(raise_below=0.7, clear_above=0.8),
        title="Online accuracy",
        description="Accuracy of forecasts joined with the conditions observed at their horizon.",
    )
    f1: LowerHysteresis = Field(
        default=LowerHysteresis(raise_below=0.35, clear_above=0.45),
        title="Online macro-F1",
        description="Macro-F1 of forecasts joined with the conditions observed later.",
    )


class StreamingConfig(ConfigModel):
    """Change detectors on the stream of per-sample errors (weather forecasts once observed)."""

    page_hinkley_delta: float = Field(
        default=0.02,
        ge=0,
        title="Page-Hinkley delta",
        description="Tolerated increase of the error rate before evidence accumulates.",
    )
    page_hinkley_lambda: float = Field(
        default=15.0,
        gt=0,
        title="Page-Hinkley lambda",
        description="Accumulated evidence that raises a change.",
    )
    adwin_delta: float = Field(
        default=0.002,
        gt=0,
        lt=1,
        title="ADWIN delta",
        description="Confidence of ADWIN's cut test; smaller means fewer false changes.",
    )
    adwin_max_window: int = Field(
        default=2000,
        ge=32,
        le=100_000,
        title="ADWIN window bound",
        description="Most recent errors ADWIN keeps (bounded memory).",
    )
    adwin_clock: int = Field(
        default=16, ge=1, title="ADWIN clock", description="Test for a cut every this many errors."
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        title="Minimum samples",
        description="Errors seen before a streaming detector may raise.",
    )


class CaptureConfig(ConfigModel):
    """Opt-in capture of samples worth retraining on, kept on disk within a budget and
    uploaded over HTTP to the cloud (never over MQTT)."""

    enabled: bool = Field(
        default=False, title="Enabled", description="Keep samples on disk for retraining."
    )
    directory: Path = Field(
        default=Path("captures"),
        title="Directory",
        description="Where captured samples wait for upload; relative to the agent's data dir.",
    )
    max_files: int = Field(
        default=500, ge=1, title="File budget", description="Oldest files are evicted beyond this."
    )
    max_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        title="Byte budget",
        description="Oldest files are evicted beyond this many bytes on disk.",
    )
    low_confidence: bool = Field(
        default=True,
        title="Capture low confidence",
        description="Keep samples whose prediction confidence is below `low_confidence_below`.",
    )
    low_confidence_below: float | None = Field(
        default=None,
        gt=0,
        le=1,
        title="Low-confidence level",
        description="Confidence cut. Unset uses the serving model's `capture_below` (the "
        "quantile of its held-out confidence stored in its spec, followed on every model "
        f"swap), or {FALLBACK_LOW_CONFIDENCE} for a model without one; a value here wins.",
    )
    max_per_hour: int = Field(
        default=360,
        ge=0,
        le=1_000_000,
        title="Captures per hour",
        description="At most this many samples kept in any hour, whatever the reason (0: no "
        "limit); the rest are counted as `rate_limited`. Bounds the writes an SD card takes.",
    )
    random_sample_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        title="Random sample rate",
        description="Also keep this share of all samples, drawn at random whatever their "
        "confidence (reason `random` unless another reason keeps them), so the labelling "
        "queue is never empty by construction; 0 disables.",
    )
    drift_windows: bool = Field(
        default=True,
        title="Capture drift windows",
        description="Keep samples while a drift alert is raised.",
    )
    drift_every: int = Field(
        default=10,
        ge=1,
        title="Drift capture stride",
        description="While drift is raised, keep one sample in this many.",
    )
    jpeg_quality: int = Field(
        default=90, ge=10, le=100, title="JPEG quality", description="For captured frames."
    )
    upload_url: HttpUrl | None = Field(
        default=None,
        title="Upload URL",
        description="Cloud endpoint receiving multipart POSTs (e.g. https://fleet/api/samples); "
        "unset keeps samples on the device only.",
    )
    token_env: str | None = Field(
        default="EDGE_AGENT_CAPTURE_TOKEN",
        title="Token variable",
        description="Environment variable holding the upload bearer token (never in YAML).",
    )
    token_file: Path | None = Field(
        default=None,
        title="Token file",
        description="File holding the upload bearer token; used before `token_env`.",
    )
    upload_batch: int = Field(
        default=20, ge=1, title="Upload batch", description="Files sent per upload round."
    )
    upload_timeout_s: float = Field(
        default=30.0, gt=0, title="Upload timeout", description="Seconds per HTTP request."
    )

    def low_confidence_level(self, model_capture_below: float | None) -> float:
        """The cut in force: this config's value, else the model's, else the fallback."""
        if self.low_confidence_below is not None:
            return self.low_confidence_below
        if model_capture_below is not None:
            return model_capture_below
        return FALLBACK_LOW_CONFIDENCE


class DriftConfig(ConfigModel):
    """Which drift detectors run on the device, their windows, thresholds and alert pacing.

    Defaults come from the calibration replay in ``benchmarks/bench_drift.py`` (figures in
    docs/drift.md): under one false alert per device-week on stationary data, and a 1σ shift
    found within a day of hourly samples.
    """

    enabled: bool = Field(default=True, title="Enabled", description="Run the drift monitor.")
    detectors: list[DetectorName] = Field(
        default_factory=lambda: list(ALL_DETECTORS),
        title="Detectors",
        description="Detectors to run; those whose baseline the model lacks are skipped.",
    )
    features: list[str] | None = Field(
        default=None,
        title="Watched features",
        description="Features (or image statistics) to watch; unset watches all in the baseline.",
    )
    seasonal: bool = Field(
        default=True,
        title="Seasonal baselines",
        description="Compare with the model's per-month baselines when it carries them "
        "(weather stations), so the seasons are not called drift; false compares with the "
        "whole training period.",
    )
    feature_metric: FeatureMetric = Field(
        default="wasserstein",
        title="Feature metric",
        description="Distance between a feature window and its baseline histogram.",
    )
    feature_window: WindowConfig = Field(
        default=WindowConfig(size=24, step=1, min_samples=24),
        title="Feature window",
        description="Window of inputs (tabular features or image statistics).",
    )
    image_window: WindowConfig = Field(
        default=WindowConfig(size=96, step=4, min_samples=96),
        title="Image-statistics window",
        description="Window of image statistics for camera models: single frames vary far "
        "more than hourly weather, so the window is longer.",
    )
    image_stats_every: int = Field(
        default=4,
        ge=1,
        le=1000,
        title="Image statistics stride",
        description="Compute image statistics on one frame in this many, so the agent keeps "
        "0.95 of a bare prepare-and-run loop's frame rate (0.86 with every frame); the image "
        "window then spans this many times more frames. 1 = every frame.",
    )
    prediction_window: WindowConfig = Field(
        default=WindowConfig(size=168, step=6, min_samples=48),
        title="Prediction window",
        description="Window of predictions (class ratio, confidence, embedding).",
    )
    class_ratio_min_share: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        title="Class ratio floor",
        description="Labels rarer than this on validation are left out of the ratio test.",
    )
    class_ratio_min_z: float = Field(
        default=4.0,
        ge=0,
        title="Class ratio significance",
        description="A label's share must also differ from validation by this many binomial "
        "standard errors, so a rare label's sampling noise is not called drift.",
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds, title="Thresholds", description="Raise/clear per metric."
    )
    accuracy_window: int = Field(
        default=168,
        ge=8,
        le=100_000,
        title="Accuracy window",
        description="Joined forecasts over which online accuracy and F1 are computed.",
    )
    accuracy_min_samples: int = Field(
        default=48, ge=1, title="Accuracy minimum", description="Joined forecasts before a verdict."
    )
    max_pending_forecasts: int = Field(
        default=64,
        ge=1,
        le=100_000,
        title="Pending forecasts",
        description="Forecasts waiting for their observation; the oldest are dropped beyond it.",
    )
    join_tolerance_s: float = Field(
        default=1800.0,
        ge=0,
        title="Join tolerance",
        description="How far an observation's time may be from a forecast's target time.",
    )
    streaming: StreamingConfig = Field(
        default_factory=StreamingConfig,
        title="Streaming detectors",
        description="Page-Hinkley and ADWIN on the error stream.",
    )
    confirm: int = Field(
        default=1,
        ge=1,
        title="Confirmations",
        description="Consecutive evaluations above the raise level needed to raise.",
    )
    cooldown_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        title="Cooldown",
        description="Seconds (of sample time) between two alerts of one detector.",
    )
    capture: CaptureConfig = Field(
        default_factory=CaptureConfig,
        title="Sample capture",
        description="Opt-in capture of samples for retraining.",
    )
