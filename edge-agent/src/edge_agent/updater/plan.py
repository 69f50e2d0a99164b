"""The pure planner: persisted state + a release, a restart or a command → steps as data.

Nothing here touches the disk, the network or a session, so every decision the updater
takes can be listed and tested on its own; ``executor`` runs the steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.protocol.errors import SignatureError
from edge_agent.protocol.manifest import ReleaseManifest
from edge_agent.protocol.messages import ArgValue
from edge_agent.protocol.signing import verify_manifest
from edge_agent.updater.state import POST_ACTIVATION, PRE_ACTIVATION, UpdaterState


class StepKind(StrEnum):
    IGNORE = "ignore"  # nothing to do; ``reason`` says why (logged, not reported)
    REFUSE = "refuse"  # the release is refused and reported
    REJECT = "reject"  # a command cannot be carried out
    DOWNLOAD = "download"
    VERIFY = "verify"
    SMOKE = "smoke"
    ACTIVATE = "activate"
    PROBATION = "probation"
    COMMIT = "commit"
    ROLLBACK = "rollback"  # trial → last committed version
    SWITCH = "switch"  # committed → another stored version (operator rollback or pin)
    PIN = "pin"
    UNPIN = "unpin"
    CHECK = "check"  # re-plan the latest known release
    PRUNE = "prune"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    reason: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class DeviceFacts:
    """What the device knows about itself and whom it trusts."""

    device_id: str
    groups: frozenset[str]
    channels: frozenset[str]
    trusted_publishers: frozenset[str]
    trusted_keys: Mapping[str, Ed25519PublicKey] = field(repr=False)
    max_model_bytes: int


APPLY_STEPS = (
    StepKind.DOWNLOAD,
    StepKind.VERIFY,
    StepKind.SMOKE,
    StepKind.ACTIVATE,
    StepKind.PROBATION,
    StepKind.COMMIT,
    StepKind.PRUNE,
)


def refusal(state: UpdaterState, manifest: ReleaseManifest, facts: DeviceFacts) -> str | None:
    """Why this device must not apply ``manifest``, or None when it may.

    The signature comes first: nothing else in an unverified manifest can be believed.
    """
    try:
        verify_manifest(manifest, facts.trusted_keys)
    except SignatureError as e:
        return f"bad signature: {e}"
    if manifest.publisher not in facts.trusted_publishers:
        return f"publisher {manifest.publisher!r} may not publish releases"
    if manifest.model != state.model:
        return f"release is for model {manifest.model!r}, this device runs {state.model!r}"
    if manifest.channel not in facts.channels:
        allowed = ", ".join(sorted(facts.channels))
        return f"channel {manifest.channel!r} not taken by this device (takes {allowed})"
    if not manifest.targets(facts.device_id, set(facts.groups)):
        return "not targeted: outside this release's rollout"
    if state.pinned is not None and state.pinned != manifest.version:
        return f"device is pinned to version {state.pinned}"
    active = state.active
    if active is not None and manifest.version <= active.version and not manifest.allow_downgrade:
        return (
            f"downgrade from version {active.version} to {manifest.version} "
            "and the release does not allow downgrades"
        )
    if manifest.size > facts.max_model_bytes:
        return f"model of {manifest.size} bytes exceeds the cap of {facts.max_model_bytes} bytes"
    return None


def plan_release(state: UpdaterState, manifest: ReleaseManifest, facts: DeviceFacts) -> list[Step]:
    """Steps to take for a release manifest that just arrived (or arrived again)."""
    active = state.active
    if active is not None and (
        manifest.release_id == active.release_id
        or (manifest.version == active.version and manifest.sha256 == active.sha256)
    ):
        return [Step(StepKind.IGNORE, f"release {manifest.release_id} is already serving")]
    if state.trial is not None and manifest.release_id == state.trial.release_id:
        return [Step(StepKind.IGNORE, f"release {manifest.release_id} is on probation")]
    if manifest.release_id in state.failed_releases:
        return [Step(StepKind.IGNORE, f"release {manifest.release_id} failed here before")]
    reason = refusal(state, manifest, facts)
    if reason is not None:
        if manifest.release_id in state.refused_releases:
            return [Step(StepKind.IGNORE, f"release {manifest.release_id} already refused")]
        return [Step(StepKind.REFUSE, reason, manifest.version)]
    return [Step(kind, version=manifest.version) for kind in APPLY_STEPS]


def plan_recovery(state: UpdaterState, facts: DeviceFacts) -> list[Step]:
    """Steps after a restart, from whatever phase the last process died in.

    A death after activation rolls back: the new model may be what killed the process, and
    a model that never finished probation has not earned the right to serve. A death
    before activation resumes the same release (the download continues where it stopped).
    """
    if state.phase in POST_ACTIVATION:
        return [
            Step(StepKind.ROLLBACK, f"agent restarted during {state.phase.value}"),
            Step(StepKind.PRUNE),
        ]
    if state.phase in PRE_ACTIVATION and state.candidate is not None:
        return plan_release(state, state.candidate, facts)
    return [Step(StepKind.PRUNE)]


def _version_arg(args: Mapping[str, ArgValue]) -> int | None:
    raw = args.get("version")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"version must be an integer, got {raw!r}")
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"version must be an integer, got {raw!r}") from e


def plan_command(state: UpdaterState, action: str, args: Mapping[str, ArgValue]) -> list[Step]:
    """Steps for an operator command (``rollback``, ``pin``, ``unpin``, ``update_check``)."""
    try:
        version = _version_arg(args)
    except ValueError as e:
        return [Step(StepKind.REJECT, str(e))]
    if action == "update_check":
        return [Step(StepKind.CHECK)]
    if action == "unpin":
        return [Step(StepKind.UNPIN), Step(StepKind.CHECK)]
    if action == "rollback":
        committed = state.active.version if state.active is not None else None
        if state.trial is not None and version in (None, committed):
            return [Step(StepKind.ROLLBACK, "rollback command"), Step(StepKind.PRUNE)]
        target = version if version is not None else _previous_version(state)
        if target is None:
            return [Step(StepKind.REJECT, "no earlier version is stored to roll back to")]
        return _switch(state, target, "rollback command")
    if action == "pin":
        if version is not None:
            target = version
        elif state.active is not None:
            target = state.active.version
        else:
            return [Step(StepKind.REJECT, "nothing to pin: no model is active")]
        switch = _switch(state, target, f"pinned to version {target}")
        if any(step.kind is StepKind.REJECT for step in switch):
            return switch
        return [*switch, Step(StepKind.PIN, None, target)]
    return [Step(StepKind.REJECT, f"the updater does not handle {action!r}")]


def _previous_version(state: UpdaterState) -> int | None:
    return state.previous[0].version if state.previous else None


def _switch(state: UpdaterState, target: int, reason: str) -> list[Step]:
    if state.trial is not None and state.trial.version == target:
        return [Step(StepKind.REJECT, f"version {target} is still on probation")]
    steps: list[Step] = []
    if state.trial is not None:
        steps.append(Step(StepKind.ROLLBACK, reason))
        if state.active is not None and state.active.version == target:
            return steps
    elif state.active is not None and state.active.version == target:
        return steps
    if state.record_for(target) is None:
        stored = sorted(r.version for r in [state.active, *state.previous] if r is not None)
        return [Step(StepKind.REJECT, f"version {target} is not stored (stored: {stored})")]
    return [*steps, Step(StepKind.SWITCH, reason, target), Step(StepKind.PRUNE)]
