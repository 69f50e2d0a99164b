"""Building, signing and publishing release manifests (retained), and recording them."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud_trainer.release.artefacts import ArtefactStore
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import (
    ProtocolError,
    ReleaseManifest,
    Rollout,
    SigningKey,
    TopicTree,
    decode_manifest,
    encode,
    utc_now,
)
from edge_agent.protocol.bundle import ModelSpec

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
TAG_PREFIX = "release."


class ReleaseError(Exception):
    """A release could not be built or published; the message names what was wrong."""


def read_metadata(path: Path) -> dict[str, str]:
    """An ONNX file's metadata properties."""
    import onnx

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (OSError, ValueError) as e:
        raise ReleaseError(f"{path}: cannot read ONNX model: {e}") from e
    except Exception as e:  # onnx's parser raises its own DecodeError types
        raise ReleaseError(f"{path}: not an ONNX model ({type(e).__name__})") from e
    return {p.key: p.value for p in proto.metadata_props}


def read_spec(path: Path) -> ModelSpec:
    """The ModelSpec embedded in an ONNX file's metadata (what the device will check)."""
    try:
        return ModelSpec.from_metadata(read_metadata(path))
    except ProtocolError as e:
        raise ReleaseError(f"{path}: {e}") from e


def new_release_id(model: str, version: int) -> str:
    """Unique per publish, so a re-published version is tried again by devices it failed on."""
    return f"{model}-v{version}-{utc_now():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ReleaseTarget:
    """Who gets the release."""

    channel: str = "stable"
    percent: float = 100.0
    groups: Sequence[str] = ()
    devices: Sequence[str] = ()
    wave: int = 0
    allow_downgrade: bool = False

    def rollout(self) -> Rollout:
        return Rollout(
            percent=self.percent,
            groups=list(self.groups),
            devices=list(self.devices),
            wave=self.wave,
        )


def build_manifest(
    *,
    model: str,
    version: int,
    sha256: str,
    size: int,
    url: str,
    spec: ModelSpec,
    target: ReleaseTarget,
    publisher: str,
    release_id: str | None = None,
) -> ReleaseManifest:
    if spec.name != model:
        raise ReleaseError(f"the file holds model {spec.name!r}, not {model!r}")
    return ReleaseManifest(
        release_id=release_id or new_release_id(model, version),
        model=model,
        version=version,
        sha256=sha256,
        size=size,
        urls=[url],
        inputs=spec.inputs,
        outputs=spec.outputs,
        channel=target.channel,
        rollout=target.rollout(),
        allow_downgrade=target.allow_downgrade,
        created=utc_now(),
        publisher=publisher,
    )


def prepare_release(
    store: ArtefactStore,
    base_url: str,
    *,
    model: str,
    version: int,
    path: Path,
    target: ReleaseTarget,
    publisher: str,
) -> ReleaseManifest:
    """Put the model file in the artefact store and describe it in an unsigned manifest."""
    spec = read_spec(path)
    sha, size, url_path = store.add(path, f"{model}-v{version}.onnx")
    return build_manifest(
        model=model,
        version=version,
        sha256=sha,
        size=size,
        url=base_url.rstrip("/") + url_path,
        spec=spec,
        target=target,
        publisher=publisher,
    )


def retarget(manifest: ReleaseManifest, target: ReleaseTarget, *, new_id: bool) -> ReleaseManifest:
    """The same artefact for another audience (a wider wave, or a rollback release)."""
    changes: dict[str, object] = {
        "channel": target.channel,
        "rollout": target.rollout(),
        "allow_downgrade": target.allow_downgrade,
        "created": utc_now(),
        "key_id": None,
        "signature": None,
    }
    if new_id:
        changes["release_id"] = new_release_id(manifest.model, manifest.version)
    return manifest.model_copy(update=changes)


class ReleaseChannel:
    """Publishes signed manifests retained on ``{root}/releases/{model}`` and reads them back."""

    def __init__(self, link: MqttLink, tree: TopicTree, key: SigningKey) -> None:
        self.link = link
        self.tree = tree
        self.key = key

    def publish(self, manifest: ReleaseManifest) -> ReleaseManifest:
        signed = self.key.sign(manifest)
        topic = self.tree.release(signed.model)
        if not self.link.publish(topic, encode(signed), qos=1, retain=True).wait(PUBLISH_TIMEOUT_S):
            raise ReleaseError(f"broker did not acknowledge the release on {topic}")
        log.info("published release %s (v%s) on %s", signed.release_id, signed.version, topic)
        return signed

    def current(self, model: str, timeout: float = 2.0) -> ReleaseManifest | None:
        """The retained manifest of ``model``, or None when the topic holds none."""
        got: list[bytes] = []
        arrived = threading.Event()

        def on_message(_topic: str, payload: bytes) -> None:
            got.append(payload)
            arrived.set()

        topic = self.tree.release(model)
        self.link.subscribe(topic, on_message)
        try:
            arrived.wait(timeout)
        finally:
            self.link.unsubscribe(topic)
        if not got or not got[-1]:
            return None
        try:
            return decode_manifest(got[-1])
        except ProtocolError as e:
            raise ReleaseError(f"retained release on {topic} is unreadable: {e}") from e


def record_in_registry(manifest: ReleaseManifest) -> None:
    """Tag the model version with the release, and the model with its current release."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    rollout = manifest.rollout
    tags = {
        f"{TAG_PREFIX}id": manifest.release_id,
        f"{TAG_PREFIX}channel": manifest.channel,
        f"{TAG_PREFIX}percent": f"{rollout.percent:g}",
        f"{TAG_PREFIX}groups": ",".join(rollout.groups),
        f"{TAG_PREFIX}wave": str(rollout.wave),
        f"{TAG_PREFIX}sha256": manifest.sha256,
        f"{TAG_PREFIX}published": manifest.created.isoformat(),
    }
    try:
        for key, value in tags.items():
            client.set_model_version_tag(manifest.model, str(manifest.version), key, value)
        client.set_registered_model_tag(
            manifest.model, f"{TAG_PREFIX}current", str(manifest.version)
        )
    except MlflowException as e:
        raise ReleaseError(f"cannot record the release in the registry: {e.message}") from e
