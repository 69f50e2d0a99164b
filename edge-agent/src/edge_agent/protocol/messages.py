"""Pydantic models for every message on the wire, one discriminated union over ``type``."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from edge_agent.protocol.topics import IDENT_PATTERN

SCHEMA_VERSION: Literal[1] = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


def _to_utc(value: datetime) -> datetime:
    # One canonical form on the wire, so signatures and de-duplication agree.
    try:
        return value.astimezone(UTC)
    except OverflowError as e:  # year 1 or 9999 pushed out of range by its offset
        raise ValueError(f"timestamp {value.isoformat()} is out of range in UTC") from e


Ident = Annotated[str, StringConstraints(pattern=IDENT_PATTERN)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc), Field(description="UTC timestamp")]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
NonNegFloat = Annotated[float, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, le=100)]
Version = Annotated[int, Field(ge=0, description="Registry version of the model")]


class WireModel(BaseModel):
    """Strict base for everything that crosses the network: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class MessageBase(WireModel):
    """Fields every device or cloud message carries."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, title="Schema version")
    device_id: Ident = Field(title="Device id", description="Sender (device) or target (cmd).")
    ts: UtcDatetime = Field(title="Timestamp", description="When the message was created, UTC.")
    seq: int = Field(
        ge=0,
        title="Sequence number",
        description="Per-device monotonic counter, for ordering and de-duplication after replay.",
    )


class DeviceKind(StrEnum):
    CAMERA = "camera"
    WEATHER = "weather"


class StatusMessage(MessageBase):
    """Retained device status; the broker publishes the ``offline`` one as the Last Will."""

    type: Literal["status"] = "status"
    state: Literal["starting", "online", "degraded", "stopping", "offline"]
    site: Ident
    kind: DeviceKind | None = None
    agent_version: Name | None = None
    model_name: Ident | None = None
    model_version: Version | None = None
    detail: ShortText | None = None
    last_will: Literal[True] | None = Field(
        default=None,
        title="Last Will",
        description=(
            "Set on the offline status the broker publishes when the connection drops. Its "
            "seq was reserved when the session began, so receivers apply it by arrival, not seq."
        ),
    )


class LabelledAccuracy(WireModel):
    """Quality of the predictions whose true label has arrived (a weather station observes
    the condition its forecast was for ``horizon_s`` later), over the device's accuracy
    window: the last ``drift.accuracy_window`` labelled predictions of the serving model."""

    accuracy: float = Field(ge=0, le=1, description="Share of labelled predictions right.")
    macro_f1: float = Field(
        ge=0, le=1, description="Mean F1 over the labels seen in the window, predicted or true."
    )
    n: int = Field(ge=1, description="Labelled predictions in the window.")


class VisitCounters(WireModel):
    """What the visit tracker saw since the agent started (counters only grow, so a lost
    telemetry message loses no count)."""

    frames: int = Field(ge=0, description="Frames the tracker saw (predictions made).")
    absent_frames: int = Field(
        ge=0, description="Of those, frames answered with the absent label (no_pet)."
    )
    visits_started: int = Field(ge=0, description="Visits begun (start events).")
    visits_ended: int = Field(ge=0, description="Visits ended (end events).")


class TelemetryMessage(MessageBase):
    """Health of the device and of the agent, sent every few seconds."""

    type: Literal["telemetry"] = "telemetry"
    uptime_s: NonNegFloat
    cpu_percent: Percent
    mem_percent: Percent
    disk_percent: Percent
    temperature_c: float | None = None
    rss_bytes: int = Field(ge=0)
    open_fds: int | None = Field(default=None, ge=0)
    inference_p50_ms: NonNegFloat | None = None
    inference_p95_ms: NonNegFloat | None = None
    fps: NonNegFloat = 0.0
    outbox_depth: int = Field(default=0, ge=0)
    dropped: dict[Name, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Counters of rejected inputs and dropped messages."
    )
    model_name: Ident | None = None
    model_version: Version | None = None
    labelled: LabelledAccuracy | None = Field(
        default=None,
        description="Accuracy on labelled predictions; absent while none is labelled.",
    )
    sensor_faults: list[Name] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Input sensors judged faulty now (see SensorFault); absent when none is.",
    )
    visits: VisitCounters | None = Field(
        default=None,
        description="Frames and visits the camera's visit tracker counted since the agent "
        "started; absent where no tracker runs (weather stations, visits off).",
    )
    absent_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of the drift monitor's recent frames answered with the model's "
        "absent label (a camera's no_pet); absent for a model without one.",
    )


class PredictionMessage(MessageBase):
    """One model output for one input (a frame or a row of hourly features)."""

    type: Literal["prediction"] = "prediction"
    model_name: Ident
    model_version: Version
    label: Label
    confidence: float = Field(ge=0, le=1)
    scores: dict[Label, float] = Field(default_factory=dict)
    latency_ms: NonNegFloat
    input_ts: UtcDatetime | None = Field(
        default=None, description="Capture time of the frame or reading the prediction is for."
    )
    input_id: Name | None = None
    horizon_s: int | None = Field(
        default=None, ge=0, description="How far ahead the forecast looks (weather)."
    )
    flags: list[Name] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Why the prediction is suspect, e.g. 'sensor_fault:pressure_mb' (made "
        "while that input sensor was judged faulty); absent when nothing is.",
    )


class DriftWindow(WireModel):
    start: UtcDatetime
    end: UtcDatetime
    n: int = Field(ge=0, description="Samples in the window.")


class FeatureDrift(WireModel):
    name: Name
    metric: Literal["psi", "js", "wasserstein", "ratio", "accuracy", "f1", "adwin", "page_hinkley"]
    score: float
    threshold: float
    baseline: float | None = None
    current: float | None = None


class DriftAlert(MessageBase):
    """A detector crossed (``raised``) or fell back below (``cleared``) its threshold."""

    type: Literal["drift"] = "drift"
    model_name: Ident
    model_version: Version
    state: Literal["raised", "cleared"]
    detector: Name
    severity: Literal["info", "warning", "critical"] = "warning"
    window: DriftWindow
    features: list[FeatureDrift] = Field(min_length=1, max_length=256)
    summary: ShortText = ""


SensorTest = Literal["stuck", "spike", "range", "step", "consistency"]


class SensorFault(MessageBase):
    """An input sensor of the device judged faulty by one health test (``raised``), or
    healthy again by that test (``cleared``). Not drift: the weather did not change, the
    instrument did. Times are those of the readings, so a replay reports its own history."""

    type: Literal["sensor_fault"] = "sensor_fault"
    sensor: Name = Field(description="The reading field, e.g. 'pressure_mb'.")
    test: SensorTest = Field(
        description="stuck: unchanged while the other sensors moved; spike: one reading far "
        "from its prediction; range: outside what the history allows; step: a jump that "
        "stayed; consistency: apparent temperature disagrees with temperature, humidity, wind."
    )
    state: Literal["raised", "cleared"]
    since: UtcDatetime = Field(description="Reading time the fault is judged to have begun.")
    observed_at: UtcDatetime = Field(description="Reading time of this decision.")
    value: float | None = Field(default=None, description="The sensor's reading then.")
    score: float = Field(description="The test's statistic at the decision.")
    threshold: float = Field(description="The level the statistic is compared with.")
    model_name: Ident | None = None
    model_version: Version | None = None
    summary: ShortText = ""


class UpdateState(StrEnum):
    """States of the device update state machine (see docs/architecture.md)."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    SMOKE = "smoke"
    ACTIVATING = "activating"
    PROBATION = "probation"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REFUSED = "refused"


class UpdateEvent(MessageBase):
    """One transition of the update state machine on a device."""

    type: Literal["event"] = "event"
    model_name: Ident
    release_id: Name | None = None
    from_version: Version | None = None
    to_version: Version
    state: UpdateState
    reason: ShortText | None = None
    duration_ms: NonNegFloat | None = None


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class VisitSnapshot(WireModel):
    """Where the visit's best frame is kept on the device (``GET /visits/{id}/snapshot``
    of its local API); the image itself never travels over MQTT."""

    id: Ident = Field(description="Snapshot id on the device (the visit id).")
    bytes: int = Field(ge=1, description="Size of the JPEG.")
    sha256: Sha256 = Field(description="SHA-256 of the JPEG, hex.")
    width: int = Field(ge=1, description="Pixels across, after any downscaling.")
    height: int = Field(ge=1, description="Pixels down, after any downscaling.")


class VisitEvent(MessageBase):
    """The camera's subject came (``start``) or left (``end``): one visit, as a video
    recorder reports it, instead of a prediction per frame.

    A visit starts once the subject (any label but the model's absent one) is seen in
    ``min_frames`` consecutive frames and ends ``quiet_s`` after the last frame that showed
    it. Times are the frames' capture times, so a replayed file gives the same visits.
    """

    type: Literal["visit"] = "visit"
    event_schema: Literal[1] = Field(
        default=1,
        title="Event schema",
        description="Version of the visit fields, bumped when they change.",
    )
    phase: Literal["start", "end"]
    visit_id: Ident = Field(description="Unique per device; the start and end share it.")
    model_name: Ident
    model_version: Version
    label: Label = Field(
        description="Most frequent subject label over the visit's subject frames (so far, "
        "at start); ties go to the label with the higher summed confidence."
    )
    confidence: float = Field(ge=0, le=1, description="Best confidence of a subject frame.")
    started_at: UtcDatetime = Field(description="Capture time of the first subject frame.")
    ended_at: UtcDatetime | None = Field(
        default=None, description="Capture time of the last subject frame (end only)."
    )
    subject_frames: int = Field(ge=1, description="Frames that showed the subject.")
    frames: int = Field(ge=1, description="All frames from the first to the last subject frame.")
    label_frames: dict[Label, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Subject frames per label, the majority's evidence.",
    )
    ended_by: Literal["quiet", "shutdown"] | None = Field(
        default=None,
        description="quiet: no subject for quiet_s; shutdown: the agent stopped mid-visit.",
    )
    snapshot: VisitSnapshot | None = Field(
        default=None, description="The best frame as stored on the device (end only)."
    )

    @model_validator(mode="after")
    def _phase_fields(self) -> VisitEvent:
        ending = (self.ended_at, self.ended_by)
        if self.phase == "start" and (any(v is not None for v in ending) or self.snapshot):
            raise ValueError("a start event carries no ended_at, ended_by or snapshot")
        if self.phase == "end" and any(v is None for v in ending):
            raise ValueError("an end event needs ended_at and ended_by")
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.frames < self.subject_frames:
            raise ValueError("frames is below subject_frames")
        return self


class StreamEventMessage(MessageBase):
    """The camera's stream was lost, froze (frames stopped changing), or came back."""

    type: Literal["stream"] = "stream"
    event_schema: Literal[1] = Field(
        default=1,
        title="Event schema",
        description="Version of the stream-event fields, bumped when they change.",
    )
    source: Name = Field(description="The source's configured name.")
    state: Literal["lost", "frozen", "restored"]
    at: UtcDatetime = Field(description="When the source noticed the change.")
    detail: ShortText | None = None
    down_s: NonNegFloat | None = Field(
        default=None, description="How long the stream was out (restored only)."
    )


CommandAction = Literal[
    "ping",
    "rollback",
    "pin",
    "unpin",
    "update_check",
    "capture",
    "set_log_level",
    "reload_config",
    "resend",
]
ArgValue = str | int | float | bool


class Command(MessageBase):
    """A request from the cloud identity to one device (``device_id`` is the target)."""

    type: Literal["cmd"] = "cmd"
    cmd_id: Name
    action: CommandAction
    args: dict[Name, ArgValue] = Field(default_factory=dict, max_length=32)
    issued_by: Name
    expires_at: UtcDatetime | None = None


class CommandAck(MessageBase):
    """The device's answer to a command, correlated by ``cmd_id``."""

    type: Literal["cmd_ack"] = "cmd_ack"
    cmd_id: Name
    result: Literal["accepted", "done", "rejected", "expired", "failed"]
    detail: ShortText | None = None


Message = Annotated[
    StatusMessage
    | TelemetryMessage
    | PredictionMessage
    | DriftAlert
    | UpdateEvent
    | Command
    | CommandAck
    | SensorFault
    | VisitEvent
    | StreamEventMessage,
    Field(discriminator="type"),
]

MESSAGE_TYPES: dict[str, type[MessageBase]] = {
    "status": StatusMessage,
    "telemetry": TelemetryMessage,
    "prediction": PredictionMessage,
    "drift": DriftAlert,
    "event": UpdateEvent,
    "cmd": Command,
    "cmd_ack": CommandAck,
    "sensor_fault": SensorFault,
    "visit": VisitEvent,
    "stream": StreamEventMessage,
}


def utc_now() -> datetime:
    return datetime.now(UTC)
