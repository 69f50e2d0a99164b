"""Who a release reaches: the rule in words, and the exact devices when the fleet is known.

Targeting rule (the device applies it, ``ReleaseManifest.targets``): a device takes a release
when it is named in ``devices``, or belongs to one of ``groups``, or falls inside ``percent``
by a stable hash of its id and the model name (so the same devices are a model's canaries
release after release). The release CLI never leaves ``percent`` to a default when groups
or devices are named: ``--groups canary`` alone means those groups and nobody else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cloud_trainer.release.fleet_client import FleetClient, FleetUnavailable
from edge_agent.protocol import Rollout


class AudienceError(Exception):
    """The audience asked for is not a sensible one (none at all, a share out of range)."""


def resolve_percent(percent: float | None, groups: Sequence[str], devices: Sequence[str]) -> float:
    """The share of the rest of the fleet a release goes to; never 100 % by accident."""
    if percent is None:
        if groups or devices:
            return 0.0
        raise AudienceError(
            "no audience: name --groups and/or --devices, or give --percent "
            "(--percent 100 releases to the whole fleet)"
        )
    if not 0 <= percent <= 100:
        raise AudienceError(f"--percent must be within 0-100, got {percent:g}")
    if percent == 0 and not groups and not devices:
        raise AudienceError("--percent 0 with no --groups or --devices reaches no device")
    return float(percent)


def describe_rule(rollout: Rollout) -> str:
    """``groups canary + devices cam-07 + 10% of the others`` style summary."""
    parts: list[str] = []
    if rollout.groups:
        parts.append("groups " + ", ".join(rollout.groups))
    if rollout.devices:
        parts.append("devices " + ", ".join(rollout.devices))
    if rollout.percent >= 100:
        parts.append("every device" if not parts else "every other device")
    elif rollout.percent > 0:
        parts.append(f"{rollout.percent:g}% of the {'others' if parts else 'fleet'}")
    return " + ".join(parts) or "no device"


def version_key(version: str | None) -> tuple[int, ...] | None:
    """``"0.2.0"`` → (0, 2, 0); None for a missing or unreadable version."""
    if not version:
        return None
    parts = re.findall(r"\d+", version.split("+")[0])[:3]
    return tuple(int(p) for p in parts) if parts else None


@dataclass(frozen=True)
class Audience:
    """A release's audience: the rule, and (from the fleet's device list) who matches it.

    ``too_old`` are reached devices whose agent is older than the model needs: they cannot
    read its spec. ``unknown_agent`` have not reported an agent version yet.
    """

    rule: str
    reached: tuple[str, ...] | None = None
    known: int | None = None
    fleet_problem: str | None = None
    needs_agent: str | None = None
    too_old: tuple[str, ...] = ()
    unknown_agent: tuple[str, ...] = ()

    @property
    def readers(self) -> tuple[str, ...]:
        """Reached devices that can read the model (or whose agent version is unknown)."""
        return tuple(d for d in self.reached or () if d not in self.too_old)

    def lines(self) -> list[str]:
        out = [f"audience: {self.rule}"]
        if self.reached is not None and self.known is not None:
            names = ", ".join(self.reached) if self.reached else "none"
            out.append(f"  {len(self.reached)} of {self.known} known device(s): {names}")
        elif self.fleet_problem:
            out.append(f"  exact devices unknown: {self.fleet_problem}")
        if self.too_old:
            out.append(
                f"  warning: {len(self.too_old)} device(s) run an agent older than "
                f"{self.needs_agent}, which this model needs: {', '.join(self.too_old)}"
            )
        if self.unknown_agent:
            out.append(f"  agent version not reported yet: {', '.join(self.unknown_agent)}")
        return out


def audience(
    model: str, rollout: Rollout, fleet_url: str | None, needs_agent: str | None = None
) -> Audience:
    """The rule of ``rollout`` and, when ``fleet_url`` answers, the devices it reaches and
    which of them run an agent older than ``needs_agent``."""
    rule = describe_rule(rollout)
    if fleet_url is None:
        return Audience(rule, fleet_problem="no --fleet-url given", needs_agent=needs_agent)
    try:
        devices = FleetClient(fleet_url).devices(model)
    except FleetUnavailable as e:
        return Audience(rule, fleet_problem=str(e), needs_agent=needs_agent)
    reached = [
        d
        for d in devices
        if rollout.reaches(str(d["device_id"]), frozenset(d.get("groups") or ()), model)
    ]
    needed = version_key(needs_agent)
    too_old: list[str] = []
    unknown: list[str] = []
    for d in reached:
        running = version_key(d.get("agent_version"))
        if running is None:
            unknown.append(str(d["device_id"]))
        elif needed is not None and running < needed:
            too_old.append(str(d["device_id"]))
    return Audience(
        rule,
        reached=tuple(str(d["device_id"]) for d in reached),
        known=len(devices),
        needs_agent=needs_agent,
        too_old=tuple(too_old),
        unknown_agent=tuple(unknown),
    )
