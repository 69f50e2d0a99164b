"""Renders Mosquitto's ACL file: each device writes only its own topics, reads only its own cmd."""

from __future__ import annotations

from collections.abc import Iterable

from cloud_trainer.provision.registry import IdentityRecord, Role
from edge_agent.protocol.topics import Channel, TopicTree

# What a device may publish: every channel of its own but ``cmd`` (the cloud's to send).
DEVICE_PUBLISHES = tuple(c for c in Channel if c is not Channel.CMD)
HEALTH_TOPIC = "$SYS/broker/version"


def identity_rules(record: IdentityRecord, tree: TopicTree) -> list[str]:
    """The ``topic`` lines of one identity, most specific first."""
    root = tree.root
    if record.role is Role.CLOUD:
        return [f"topic readwrite {root}/#"]
    if record.role is Role.FLEET:
        # Reading the whole tree also covers ``$share/<group>/{root}/...`` subscriptions:
        # the broker checks the filter without its share prefix.
        return [f"topic read {root}/#"]
    if record.role is Role.HEALTH:
        return [f"topic read {HEALTH_TOPIC}"]
    assert record.site is not None and record.device is not None
    rules = [
        f"topic write {tree.device(record.site, record.device, channel)}"
        for channel in DEVICE_PUBLISHES
    ]
    rules.append(f"topic read {tree.device(record.site, record.device, Channel.CMD)}")
    rules.append(f"topic read {root}/releases/#")
    return rules


def render_acl(records: Iterable[IdentityRecord], topic_root: str) -> str:
    """The whole ACL file for the active identities; anything not listed is denied."""
    tree = TopicTree(topic_root)
    lines = [
        "# Mosquitto ACL rendered by `cloud-trainer device ...` from the provisioning registry.",
        "# Do not edit: changes are overwritten. Unlisted users and topics are denied.",
    ]
    order = {Role.CLOUD: 0, Role.FLEET: 1, Role.HEALTH: 2, Role.DEVICE: 3}
    active = sorted((r for r in records if r.active), key=lambda r: (order[r.role], r.username))
    for record in active:
        lines.append("")
        lines.append(f"user {record.username}")
        lines.extend(identity_rules(record, tree))
    return "\n".join(lines) + "\n"
