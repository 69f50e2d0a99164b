"""The model spec every released ONNX file carries in its metadata: how to feed it, how to
read its outputs, and the training-time baselines the device compares live data with.

The cloud writes it at export; the device reads it through onnxruntime
(``custom_metadata_map``), so the ONNX file alone is the whole bundle.

Forward compatibility: the spec has a versioned core (``spec_version``) that a reader must
understand, and optional sections it may ignore. The writer names, in ``optional``, every
ignorable section the spec carries that some agents may not know; a reader drops those it does
not know, with a logged note, and refuses anything else it does not know (that is core, and
needs a newer agent). Agents before 0.2.0 read strictly: a spec they can read carries no field
newer than they are (``min_agent_version`` says which agents can read a spec).
"""

from __future__ import annotations

import json
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from edge_agent.protocol.errors import ProtocolError
from edge_agent.protocol.manifest import TensorSpec
from edge_agent.protocol.messages import Ident, Label, Name, UtcDatetime, WireModel
from edge_agent.protocol.sensors import SensorHealthBaseline

SPEC_METADATA_KEY = "edge_mlops.spec"
# In the spec JSON: the dotted paths of sections a reader may ignore when it does not know them.
OPTIONAL_KEY = "optional"
MAX_OPTIONAL = 256
MAX_SPEC_BYTES = 4 * 1024 * 1024

log = logging.getLogger(__name__)

# The spec core this agent reads; a spec with a higher ``spec_version`` needs a newer agent.
SPEC_CORE_VERSION = 1
# Agents from this version skip the optional sections they do not know.
FORWARD_COMPATIBLE_AGENT = "0.2.0"
STRICT_AGENT = "0.1.0"
# Sections a reader may ignore: without them the model still runs correctly (only drift
# comparison, capture levels or provenance are poorer). Dotted paths into the spec.
IGNORABLE_SECTIONS = frozenset(
    {
        "capture_below",
        "capture_quantile",
        "created",
        "data_version",
        "drift.embedding",
        "drift.seasonal",
        "git_commit",
        "presence",
        "sensor_health",
    }
)
# Fields that strict (pre-0.2.0) agents do not know: a spec carrying one needs 0.2.0+.
NEWER_THAN_STRICT_AGENTS = frozenset(
    {"capture_below", "capture_quantile", "presence", "sensor_health", OPTIONAL_KEY}
)


class HistogramBaseline(WireModel):
    """Distribution of one quantity at training time: bin edges and the share in each bin.

    ``edges`` has one more entry than ``probs``; values below the first edge count in the
    first bin and above the last edge in the last bin.
    """

    edges: list[float] = Field(min_length=2)
    probs: list[float] = Field(min_length=1)
    mean: float
    std: float = Field(ge=0)
    n: int = Field(ge=1)

    @model_validator(mode="after")
    def _shape(self) -> HistogramBaseline:
        if len(self.edges) != len(self.probs) + 1:
            raise ValueError("edges must have exactly one more entry than probs")
        if any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be non-decreasing")
        if abs(sum(self.probs) - 1.0) > 1e-6 or min(self.probs) < 0:
            raise ValueError("probs must be non-negative and sum to 1")
        return self


class FeatureBaseline(HistogramBaseline):
    name: Name


class EmbeddingBaseline(WireModel):
    """Per-dimension mean and std of an embedding output on validation data."""

    output: Name
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)
    n: int = Field(ge=1)
    # Distance of validation embeddings from ``mean`` (standardised), for a drift threshold.
    distance: HistogramBaseline | None = None


MONTHS = 12


def _rows_are_shares(rows: list[list[float]], what: str) -> None:
    for row in rows:
        if abs(sum(row) - 1.0) > 1e-4 or min(row) < 0:
            raise ValueError(f"every month's {what} must be non-negative and sum to 1")


class SeasonalHistogram(WireModel):
    """One quantity per calendar month (UTC) on bins shared by every month, so a window
    that spans two months is compared with a blend of both on the same bins.

    ``probs``, ``mean``, ``std`` and ``n`` hold one entry per month, January first;
    ``n`` counts the rows behind each month before any pooling with its neighbours.
    """

    edges: list[float] = Field(min_length=2)
    probs: list[list[float]] = Field(min_length=MONTHS, max_length=MONTHS)
    mean: list[float] = Field(min_length=MONTHS, max_length=MONTHS)
    std: list[Annotated[float, Field(ge=0)]] = Field(min_length=MONTHS, max_length=MONTHS)
    n: list[Annotated[int, Field(ge=0)]] = Field(min_length=MONTHS, max_length=MONTHS)

    @model_validator(mode="after")
    def _shape(self) -> SeasonalHistogram:
        if any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be non-decreasing")
        if any(len(row) != len(self.edges) - 1 for row in self.probs):
            raise ValueError("every month needs one share per bin (one fewer than edges)")
        _rows_are_shares(self.probs, "bin shares")
        return self


class SeasonalFeature(SeasonalHistogram):
    name: Name


class SeasonalBaseline(WireModel):
    """Per-month baselines for a device whose inputs follow the seasons (weather station).

    Replayed in time order, a day of January is far from the whole year's distribution;
    compared with January's own, only a change the seasons do not explain stands out.
    """

    features: list[SeasonalFeature] = Field(default_factory=list)
    class_ratio: list[dict[Label, float]] = Field(
        default_factory=list, description="Share of each predicted label, one map per month."
    )
    class_ratio_inflation: float = Field(
        default=1.0,
        ge=1.0,
        description="Variance of a week's predicted-label share over the binomial variance: "
        "consecutive hours are alike, so a week holds fewer independent samples than hours.",
    )
    confidence: SeasonalHistogram | None = None
    error_rate: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=list, description="Forecast error rate per month on held-out data."
    )

    @model_validator(mode="after")
    def _months(self) -> SeasonalBaseline:
        if self.class_ratio and len(self.class_ratio) != MONTHS:
            raise ValueError(f"class_ratio needs {MONTHS} months, got {len(self.class_ratio)}")
        if self.class_ratio:
            _rows_are_shares([list(m.values()) for m in self.class_ratio], "class ratio")
        if self.error_rate and len(self.error_rate) != MONTHS:
            raise ValueError(f"error_rate needs {MONTHS} months, got {len(self.error_rate)}")
        return self

    def feature(self, name: str) -> SeasonalFeature:
        for item in self.features:
            if item.name == name:
                return item
        raise KeyError(name)


class DriftBaseline(WireModel):
    """Training/validation statistics the device's drift monitor compares with."""

    features: list[FeatureBaseline] = Field(
        default_factory=list,
        description="Input features (tabular) or image statistics (camera).",
    )
    class_ratio: dict[Label, float] = Field(
        default_factory=dict, description="Share of each predicted label on validation."
    )
    confidence: HistogramBaseline | None = None
    embedding: EmbeddingBaseline | None = None
    seasonal: SeasonalBaseline | None = Field(
        default=None, description="Per-month baselines; absent = whole-training-period only."
    )

    def feature(self, name: str) -> FeatureBaseline:
        for item in self.features:
            if item.name == name:
                return item
        raise KeyError(name)


class ImagePreprocessing(WireModel):
    """How a camera frame becomes the model's input tensor (see ``features.image``)."""

    kind: Literal["image"] = "image"
    height: int = Field(ge=8, le=4096)
    width: int = Field(ge=8, le=4096)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    scale: float = Field(default=1 / 255, gt=0, description="Multiplier applied to 0-255 pixels.")
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)
    normalised_in_graph: bool = Field(
        default=False,
        description="True when the graph itself applies scale/mean/std to raw 0-255 pixels.",
    )
    interpolation: Literal["bilinear", "area"] = "bilinear"


class TabularPreprocessing(WireModel):
    """How a row of named features becomes the model's input tensor."""

    kind: Literal["tabular"] = "tabular"
    feature_set: Name = Field(
        description="Which feature builder computes the row (e.g. 'weather-hourly-v1')."
    )
    features: list[Name] = Field(min_length=1, description="Column order of the input tensor.")
    normalised_in_graph: bool = True
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _normalisation(self) -> TabularPreprocessing:
        if not self.normalised_in_graph:
            n = len(self.features)
            if self.mean is None or self.std is None or len(self.mean) != n or len(self.std) != n:
                raise ValueError("mean and std (one per feature) are needed outside the graph")
        return self


Preprocessing = Annotated[ImagePreprocessing | TabularPreprocessing, Field(discriminator="kind")]


class PresenceRule(WireModel):
    """How a model says "nothing to see": one label means the subject is absent.

    The model's probabilities over its labels include ``absent_label``; the device answers it
    when its probability is at least ``absent_at`` (calibrated at training on held-out scenes
    and subjects), and otherwise the most probable of the other labels. A reader that ignores
    this section takes the plain arg-max, which also answers the absent label, only less
    often than calibrated.
    """

    absent_label: Label
    absent_at: float = Field(
        gt=0,
        lt=1,
        description="The absent label is answered when its probability is at least this.",
    )
    method: Name | None = Field(
        default=None, description="How the presence score is made (for the model card)."
    )


class ModelSpec(WireModel):
    """Everything the device needs to know about a model, shipped inside its ONNX file."""

    spec_version: int = Field(
        default=SPEC_CORE_VERSION,
        ge=1,
        le=SPEC_CORE_VERSION,
        description="Version of the core a reader must understand.",
    )
    name: Ident
    task: Literal["image_classification", "tabular_classification"]
    labels: list[Label] = Field(min_length=2)
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    probabilities_output: Name = Field(description="Output holding per-label probabilities.")
    embedding_output: Name | None = None
    positive_label: Label | None = None
    decision_threshold: float | None = Field(default=None, ge=0, le=1)
    capture_below: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Capture frames whose top-class probability is below this: the "
        "`capture_quantile` quantile of the top probability on held-out data. Absent in "
        "older specs; the device then falls back to its own default.",
    )
    capture_quantile: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Which quantile of the held-out top probability `capture_below` is "
        "(0.1: about one in-distribution frame in ten is below it).",
    )
    preprocessing: Preprocessing
    drift: DriftBaseline = Field(default_factory=DriftBaseline)
    presence: PresenceRule | None = Field(
        default=None,
        description="The label meaning the subject is absent (a camera's no_pet) and the "
        "calibrated probability at which it is answered; absent for models that always "
        "see their subject.",
    )
    sensor_health: SensorHealthBaseline | None = Field(
        default=None,
        description="Per-sensor limits and change models for the station's sensor-health "
        "tests (edge_agent.health); absent in older specs and on cameras: no tests run.",
    )
    data_version: Name | None = Field(default=None, description="Hash of the training data.")
    horizon_s: int | None = Field(default=None, ge=0)
    latency_budget_ms: float = Field(default=200.0, gt=0)
    created: UtcDatetime | None = None
    git_commit: Name | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        names = {o.name for o in self.outputs}
        if self.probabilities_output not in names:
            raise ValueError(f"probabilities_output {self.probabilities_output!r} not in outputs")
        if self.embedding_output is not None and self.embedding_output not in names:
            raise ValueError(f"embedding_output {self.embedding_output!r} not in outputs")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} not in labels")
        if self.capture_quantile is not None and self.capture_below is None:
            raise ValueError("capture_quantile needs capture_below")
        if self.presence is not None:
            if self.presence.absent_label not in self.labels:
                raise ValueError(
                    f"presence.absent_label {self.presence.absent_label!r} not in labels"
                )
            if len(self.labels) < 3:
                raise ValueError("presence needs at least two labels besides the absent one")
        return self

    def present_labels(self) -> list[str]:
        """The labels that name a subject (all of them without a presence rule)."""
        absent = self.presence.absent_label if self.presence is not None else None
        return [label for label in self.labels if label != absent]

    def decide(self, scores: Mapping[str, float]) -> tuple[str, float]:
        """The answer and its confidence for per-label probabilities (one rule for the device
        and for evaluation in the cloud).

        With a presence rule the absent label wins at ``absent_at``; otherwise the most
        probable subject label, its confidence being its share of the subject labels'
        probability (how sure the model is which subject, given there is one).
        """
        if self.presence is not None:
            absent = self.presence.absent_label
            if scores[absent] >= self.presence.absent_at:
                return absent, float(scores[absent])
            present = {k: v for k, v in scores.items() if k != absent}
            label = max(present, key=present.__getitem__)
            total = sum(present.values())
            return label, float(present[label] / total) if total > 0 else 0.0
        positive, threshold = self.positive_label, self.decision_threshold
        if positive is not None and threshold is not None:
            if scores[positive] >= threshold:
                return positive, float(scores[positive])
            label = max((k for k in scores if k != positive), key=scores.__getitem__)
            return label, float(scores[label])
        label = max(scores, key=scores.__getitem__)
        return label, float(scores[label])

    def to_metadata(self) -> dict[str, str]:
        """The spec as ONNX metadata, declaring its ignorable sections when they matter."""
        data = self.model_dump(mode="json", exclude_none=True)
        present = spec_paths(data)
        if present & NEWER_THAN_STRICT_AGENTS:
            # Strict agents cannot read this spec anyway; tell forward-compatible ones
            # which sections they may skip.
            data[OPTIONAL_KEY] = sorted(present & IGNORABLE_SECTIONS)
        return {SPEC_METADATA_KEY: json.dumps(data, separators=(",", ":"))}

    def min_agent_version(self) -> str:
        """The oldest agent version that reads this spec."""
        return required_agent(self.to_metadata())

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelSpec:
        """Read the spec from ONNX metadata, or raise ProtocolError naming the problem.

        Declared optional sections this agent does not know are dropped with a logged note;
        a newer core, or an unknown field not declared optional, is refused.
        """
        raw = metadata.get(SPEC_METADATA_KEY)
        if raw is None:
            raise ProtocolError(f"model has no {SPEC_METADATA_KEY!r} metadata")
        if len(raw) > MAX_SPEC_BYTES:
            raise ProtocolError(f"model spec of {len(raw)} bytes exceeds {MAX_SPEC_BYTES}")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ProtocolError(f"model spec is not valid JSON: {e.msg}") from e
        if not isinstance(data, dict):
            raise ProtocolError("model spec is not a JSON object")
        core = data.get("spec_version", SPEC_CORE_VERSION)
        if isinstance(core, int) and core > SPEC_CORE_VERSION:
            raise ProtocolError(
                f"model spec core version {core} needs a newer agent (this agent reads core "
                f"version {SPEC_CORE_VERSION})"
            )
        skipped = drop_unknown_optional(cls, data)
        data.pop(OPTIONAL_KEY, None)  # transport only: ``to_metadata`` writes it afresh
        if skipped:
            log.info(
                "model %s: skipped optional spec section(s) this agent does not know: %s",
                data.get("name"),
                ", ".join(skipped),
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            from edge_agent.protocol.codec import describe_validation_error

            problem = describe_validation_error("model spec", e)
            if any(err["type"] == "extra_forbidden" for err in e.errors()):
                problem += " (a field this agent does not know and the spec does not declare "
                problem += "optional: the model needs a newer agent)"
            raise ProtocolError(problem) from e


def required_agent(metadata: Mapping[str, str]) -> str:
    """The oldest agent version that reads the spec in ONNX ``metadata`` as written (a newer
    writer's sections included, which this reader would drop)."""
    try:
        data = json.loads(metadata.get(SPEC_METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        return FORWARD_COMPATIBLE_AGENT
    if not isinstance(data, dict):
        return FORWARD_COMPATIBLE_AGENT
    newer = spec_paths(data) & NEWER_THAN_STRICT_AGENTS
    return FORWARD_COMPATIBLE_AGENT if newer else STRICT_AGENT


def spec_paths(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every field present in a spec (objects descended, lists not)."""
    paths: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, Mapping) and key != "class_ratio":
            paths |= spec_paths(value, path + ".")
    return paths


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``X``, ``X | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := _model_of(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def drop_unknown_optional(model: type[BaseModel], data: dict[str, Any]) -> list[str]:
    """Remove the declared optional sections ``model`` has no field for; returns their paths."""
    declared = data.get(OPTIONAL_KEY)
    if not isinstance(declared, list) or len(declared) > MAX_OPTIONAL:
        return []
    skipped: list[str] = []
    for path in declared:
        if isinstance(path, str) and _drop(model, data, path.split(".")):
            skipped.append(path)
    return skipped


def _drop(model: type[BaseModel], data: dict[str, Any], parts: Iterable[str]) -> bool:
    head, *rest = parts
    if head not in data:
        return False
    field = model.model_fields.get(head)
    if field is None:
        del data[head]
        return True
    inner = _model_of(field.annotation)
    child = data[head]
    if rest and inner is not None and isinstance(child, dict):
        return _drop(inner, child, rest)
    return False
