"""The release manifest: what a device needs to fetch, check and run a model version."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from edge_agent.protocol.messages import (
    SCHEMA_VERSION,
    Ident,
    Name,
    UtcDatetime,
    Version,
    WireModel,
)

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Dim = int | Annotated[str, StringConstraints(min_length=1, max_length=32)] | None
TensorDType = Literal["float32", "float16", "float64", "int64", "int32", "uint8", "int8", "bool"]
MAX_MODEL_BYTES = 512 * 1024 * 1024


class TensorSpec(WireModel):
    """One graph input or output: name, element type and shape (``None``/text = dynamic)."""

    name: Name
    dtype: TensorDType
    shape: list[Dim] = Field(max_length=8)


class Rollout(WireModel):
    """Who should take this release: a share of the fleet, named groups, pinned devices."""

    percent: float = Field(default=100.0, ge=0, le=100)
    groups: list[Ident] = Field(default_factory=list, max_length=256)
    devices: list[Ident] = Field(default_factory=list, max_length=10_000)
    wave: int = Field(default=0, ge=0, description="Rollout wave this manifest belongs to.")

    def reaches(self, device_id: str, groups: frozenset[str] | set[str], model: str) -> bool:
        """Whether a device of ``model`` (member of ``groups``) is in this audience.

        Named devices and groups are always in; every other device is in when its stable
        bucket (a hash of the device id and the model name, see ``rollout_bucket``) lies
        below ``percent``. A release to groups alone therefore carries ``percent`` 0.
        """
        if device_id in self.devices or groups.intersection(self.groups):
            return True
        return rollout_bucket(device_id, model) < self.percent


class ReleaseManifest(WireModel):
    """Signed description of one model release, published retained on its release topic.

    The signature covers the canonical JSON of every other field; see ``signing``.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["release"] = "release"
    release_id: Name
    model: Ident
    version: Version
    sha256: Sha256Hex
    size: int = Field(gt=0, le=MAX_MODEL_BYTES)
    urls: list[Annotated[str, StringConstraints(max_length=2048)]] = Field(
        min_length=1, max_length=8
    )
    inputs: list[TensorSpec] = Field(min_length=1, max_length=64)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=64)
    channel: Ident = "stable"
    rollout: Rollout = Field(default_factory=Rollout)
    allow_downgrade: bool = False
    created: UtcDatetime
    publisher: Name = Field(description="Identity that published the release.")
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = None
    signature: Annotated[str, StringConstraints(max_length=128)] | None = None

    @field_validator("urls")
    @classmethod
    def _http_only(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"download URL must be http(s): {url!r}")
        return urls

    @model_validator(mode="after")
    def _signature_needs_key(self) -> ReleaseManifest:
        if (self.signature is None) != (self.key_id is None):
            raise ValueError("signature and key_id go together")
        return self

    def targets(self, device_id: str, groups: frozenset[str] | set[str]) -> bool:
        """Whether this release is meant for ``device_id`` (member of ``groups``)."""
        return self.rollout.reaches(device_id, groups, self.model)


def rollout_bucket(device_id: str, model: str) -> float:
    """Stable position of a device in [0, 100) for a model's percentage rollouts.

    Keyed by model, not release, so the same devices are the canaries of every version.
    """
    digest = hashlib.sha256(f"{model}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


RolloutAction = Literal["started", "advanced", "done", "aborted", "restored", "stopped"]


class RolloutRecord(WireModel):
    """One step of a staged rollout, published by the release tooling for the fleet's history.

    Sent (QoS 1, not retained) on ``{root}/releases/{model}/rollout``: devices never
    subscribe there; the fleet service stores every record under its ``release_id``.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["rollout"] = "rollout"
    release_id: Name
    model: Ident
    version: Version
    seq: int = Field(ge=0, le=2**62, description="Order of the record within its rollout.")
    ts: UtcDatetime
    action: RolloutAction
    wave: int = Field(ge=0, le=1000)
    audience: Annotated[str, StringConstraints(max_length=1024)] = ""
    reason: Annotated[str, StringConstraints(max_length=2048)] = ""
    restored_release_id: Name | None = None
    restored_version: Version | None = None
    publisher: Name
