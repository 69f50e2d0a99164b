"""Promote and roll back releases from the dashboard by re-signing manifests the store holds."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, select

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store import schema as t
from cloud_trainer.release.publisher import ReleaseChannel, ReleaseError, ReleaseTarget, retarget
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import ReleaseManifest, SigningKey, TopicTree
from edge_agent.protocol.codec import describe_validation_error

log = logging.getLogger(__name__)


class ReleaseActionError(Exception):
    """An operator's release action cannot be done; ``status_code`` is the HTTP answer."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _stored_manifests(conn: Connection, model: str) -> list[dict[str, Any]]:
    r = t.releases.c
    query = select(r.release_id, r.version, r.created, r.manifest).where(r.model_name == model)
    return [dict(row._mapping) for row in conn.execute(query.order_by(r.created.desc()))]


class ReleaseActions:
    """Widens a rollout (promote) or re-releases an earlier version (rollback).

    The service never holds model files: every artefact a device may be sent was already
    published once, and its manifest (URLs, sha256, tensor contract) is in the store. So
    both actions re-sign a stored manifest with a new audience, exactly as the release CLI
    and the rollout controller do, and publish it retained on the model's release topic.
    """

    def __init__(
        self, store: FleetStore, link: MqttLink, tree: TopicTree, key: SigningKey | None
    ) -> None:
        self.store = store
        self.link = link
        self.tree = tree
        self.key = key

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def _require_key(self) -> SigningKey:
        if self.key is None:
            raise ReleaseActionError(
                "release actions need the service started with --release-signing-key", 503
            )
        return self.key

    def _channel(self) -> ReleaseChannel:
        key = self._require_key()
        if not self.link.connected.is_set():
            raise ReleaseActionError("the broker is not connected; try again shortly", 503)
        return ReleaseChannel(self.link, self.tree, key)

    @staticmethod
    def _manifest(row: dict[str, Any]) -> ReleaseManifest:
        # The store keeps manifests without their signature; it is made anew on publish.
        unsigned = {**row["manifest"], "key_id": None, "signature": None}
        try:
            return ReleaseManifest.model_validate(unsigned)
        except ValidationError as e:
            what = f"stored manifest of {row['release_id']}"
            raise ReleaseActionError(describe_validation_error(what, e), 500) from e

    def promote(self, release_id: str, percent: float, caller: str) -> ReleaseManifest:
        """Publish the next wave of the model's current release to a wider share."""
        self._require_key()
        row = self.store.read(lambda c: _release_row(c, release_id))
        if row is None:
            raise ReleaseActionError(f"unknown release {release_id!r}", 404)
        newest = self.store.read(lambda c: _stored_manifests(c, row["model_name"]))[0]
        if newest["release_id"] != release_id:
            raise ReleaseActionError(
                f"{release_id} is no longer the current release of {row['model_name']} "
                f"({newest['release_id']} is); roll back to its version instead",
                409,
            )
        manifest = self._manifest(row)
        rollout = manifest.rollout
        if percent <= rollout.percent:
            raise ReleaseActionError(
                f"{release_id} already reaches {rollout.percent:g}%; promote to a larger share "
                "(narrowing a rollout is a rollback)",
                409,
            )
        target = ReleaseTarget(
            channel=manifest.channel,
            percent=percent,
            groups=tuple(rollout.groups),
            devices=tuple(rollout.devices),
            wave=rollout.wave + 1,
            allow_downgrade=manifest.allow_downgrade,
        )
        channel = self._channel()
        try:
            signed = channel.publish(retarget(manifest, target, new_id=False))
        except ReleaseError as e:
            raise ReleaseActionError(str(e), 503) from e
        log.info("promoted %s to %g%% (wave %d) by %s", release_id, percent, target.wave, caller)
        return signed

    def rollback(self, model: str, to_version: int, caller: str) -> ReleaseManifest:
        """Release an earlier version to every device again, downgrade allowed."""
        self._require_key()
        rows = self.store.read(lambda c: _stored_manifests(c, model))
        if not rows:
            raise ReleaseActionError(f"no release of {model!r} is known", 404)
        if rows[0]["version"] == to_version:
            raise ReleaseActionError(
                f"{model} v{to_version} is the current release already ({rows[0]['release_id']})",
                409,
            )
        earlier = next((r for r in rows if r["version"] == to_version), None)
        if earlier is None:
            known = ", ".join(f"v{v}" for v in sorted({r["version"] for r in rows}))
            raise ReleaseActionError(
                f"no stored release of {model} v{to_version} to restore (known: {known})", 404
            )
        manifest = self._manifest(earlier)
        target = ReleaseTarget(channel=manifest.channel, allow_downgrade=True)
        channel = self._channel()
        try:
            signed = channel.publish(retarget(manifest, target, new_id=True))
        except ReleaseError as e:
            raise ReleaseActionError(str(e), 503) from e
        log.info("rolled %s back to v%d as %s by %s", model, to_version, signed.release_id, caller)
        return signed


def _release_row(conn: Connection, release_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(t.releases).where(t.releases.c.release_id == release_id)).first()
    return None if row is None else dict(row._mapping)
