"""The embedded cloud stack: broker, MLflow store, release key, artefact server, fleet service."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import SecretStr

from cloud_trainer.fleet.policy.engine import ActionHandler
from cloud_trainer.fleet.policy.rules import ActionName
from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.release.artefacts import ArtefactServer
from cloud_trainer.release.publisher import (
    ReleaseChannel,
    ReleaseTarget,
    prepare_release,
    record_in_registry,
)
from cloud_trainer.stack.mlflow_store import MlflowStore
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import ReleaseManifest, SigningKey, TopicTree

log = logging.getLogger(__name__)

CLOUD_IDENTITY = "cloud"


@dataclass(frozen=True)
class PolicyRuleSpec:
    """One per-model rule for the fleet policy engine (see fleet/policy/rules.py)."""

    name: str
    model: str
    actions: tuple[ActionName, ...]
    detectors: tuple[str, ...] = ()


@dataclass
class LocalStack:
    """Everything the cloud side runs, on loopback, under one work folder."""

    workdir: Path
    endpoint: BrokerEndpoint
    store: MlflowStore
    key: SigningKey
    public_key_path: Path
    artefacts: ArtefactServer
    fleet: FleetService
    link: MqttLink
    channel: ReleaseChannel
    tree: TopicTree
    api_token: str
    viewer_token: str
    broker: MosquittoBroker | None = None
    released: dict[str, ReleaseManifest] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        workdir: Path,
        rules: list[PolicyRuleSpec],
        handlers: Mapping[ActionName, ActionHandler],
        broker: BrokerEndpoint | None = None,
    ) -> LocalStack:
        """Start the services in dependency order; on failure, stop what already started."""
        workdir.mkdir(parents=True, exist_ok=True)
        started: list[object] = []
        try:
            mosquitto = None
            if broker is None:
                mosquitto = MosquittoBroker(workdir=workdir / "broker").start()
                started.append(mosquitto)
                broker = BrokerEndpoint(mosquitto.host, mosquitto.port)
            store = MlflowStore.local(workdir / "mlflow")
            store.activate()
            key = SigningKey.generate()
            private, public = workdir / "keys" / "fleet.key", workdir / "keys" / "fleet.pub"
            key.save(private, public)
            artefacts = ArtefactServer(workdir / "artefacts").start()
            started.append(artefacts)
            policy = workdir / "fleet" / "policy.yaml"
            policy.parent.mkdir(parents=True, exist_ok=True)
            policy.write_text(
                yaml.safe_dump(
                    {
                        "cooldown_s": 3600,
                        "rules": [
                            {
                                "name": r.name,
                                "model": r.model,
                                "actions": list(r.actions),
                                "detectors": list(r.detectors),
                            }
                            for r in rules
                        ],
                    }
                )
            )
            token = secrets.token_urlsafe(24)
            viewer = secrets.token_urlsafe(24)  # for what only reads (the rollout's restore)
            settings = FleetSettings(
                database_url=f"sqlite:///{workdir / 'fleet' / 'fleet.db'}",
                broker_host=broker.host,
                broker_port=broker.port,
                http_port=0,
                api_tokens={"operator": SecretStr(token)},
                viewer_tokens={"loop": SecretStr(viewer)},
                samples_dir=workdir / "fleet" / "samples",
                policy_file=policy,
                release_signing_key=private,
                release_public_keys=[public],
            )
            fleet = FleetService(settings, handlers=handlers).start()
            started.append(fleet)
            link = MqttLink(broker, client_id=f"{CLOUD_IDENTITY}-{secrets.token_hex(3)}")
            link.start()
            started.append(link)
            tree = TopicTree()
            return cls(
                workdir=workdir,
                endpoint=broker,
                store=store,
                key=key,
                public_key_path=public,
                artefacts=artefacts,
                fleet=fleet,
                link=link,
                channel=ReleaseChannel(link, tree, key),
                tree=tree,
                api_token=token,
                viewer_token=viewer,
                broker=mosquitto,
            )
        except BaseException:
            for service in reversed(started):
                _stop(service)
            raise

    def prepare(
        self, model: str, version: int, path: Path, target: ReleaseTarget | None = None
    ) -> ReleaseManifest:
        """An unsigned manifest for a registered version, its file on the artefact server."""
        return prepare_release(
            self.artefacts.store,
            self.artefacts.base_url,
            model=model,
            version=version,
            path=path,
            target=target or ReleaseTarget(),
            publisher=CLOUD_IDENTITY,
        )

    def publish(self, manifest: ReleaseManifest) -> ReleaseManifest:
        """Sign, publish retained, and record the release in the registry."""
        signed = self.channel.publish(manifest)
        record_in_registry(signed)
        self.released[signed.model] = signed
        return signed

    def close(self) -> None:
        for service in (self.link, self.fleet, self.artefacts, self.broker):
            if service is not None:
                _stop(service)


def _stop(service: object) -> None:
    if isinstance(service, MosquittoBroker):
        service.close()
    elif isinstance(service, MqttLink | FleetService | ArtefactServer):
        service.stop()
