"""Staged rollouts: a pure wave decision, and a controller that acts on devices' update events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cloud_trainer.release.audience import describe_rule
from cloud_trainer.release.publisher import ReleaseChannel, ReleaseTarget, retarget
from cloud_trainer.release.restore import RestoreSource, choose_restore
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import (
    Channel,
    ReleaseManifest,
    RolloutRecord,
    TopicTree,
    UpdateEvent,
    UpdateState,
    encode,
    safe_decode,
    utc_now,
)
from edge_agent.protocol.manifest import RolloutAction

log = logging.getLogger(__name__)

RECORD_TIMEOUT_S = 5.0
FINAL_OK = frozenset({UpdateState.COMMITTED})
FINAL_BAD = frozenset({UpdateState.ROLLED_BACK, UpdateState.FAILED})


class Action(StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"
    DONE = "done"
    ABORT = "abort"


@dataclass(frozen=True)
class Wave:
    """One step of a rollout: a share of the fleet and/or named groups."""

    percent: float
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutPolicy:
    """When a wave is judged good enough to widen, and when to give up and roll back."""

    waves: tuple[Wave, ...] = (Wave(10.0), Wave(50.0), Wave(100.0))
    min_outcomes: int = 1
    max_failure_rate: float = 0.2
    soak_s: float = 60.0
    wave_timeout_s: float = 3600.0


@dataclass
class Tally:
    """Latest outcome per device for one release."""

    committed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    in_progress: set[str] = field(default_factory=set)

    def record(self, event: UpdateEvent) -> None:
        device = event.device_id
        if event.state in FINAL_OK:
            self.committed.add(device)
            self.in_progress.discard(device)
            self.failed.pop(device, None)
        elif event.state in FINAL_BAD:
            self.failed[device] = event.reason or event.state.value
            self.committed.discard(device)
            self.in_progress.discard(device)
        elif event.state not in (UpdateState.REFUSED, UpdateState.IDLE):
            self.in_progress.add(device)

    @property
    def decided(self) -> int:
        return len(self.committed) + len(self.failed)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(policy: RolloutPolicy, wave: int, tally: Tally, wave_age_s: float) -> Decision:
    """What to do with the rollout now; pure, so every rule is unit-tested."""
    decided = tally.decided
    bad = len(tally.failed)
    if decided >= policy.min_outcomes and bad / decided > policy.max_failure_rate:
        return Decision(
            Action.ABORT,
            f"failure rate {bad}/{decided} exceeds {policy.max_failure_rate:.0%} in wave {wave}",
        )
    if decided < policy.min_outcomes or tally.in_progress:
        if wave_age_s >= policy.wave_timeout_s:
            return Decision(
                Action.ABORT, f"wave {wave} saw {decided} outcome(s) in {wave_age_s:.0f} s"
            )
        return Decision(Action.WAIT, f"{decided} outcome(s), {len(tally.in_progress)} in progress")
    if wave_age_s < policy.soak_s:
        return Decision(Action.WAIT, f"soaking ({wave_age_s:.0f}/{policy.soak_s:.0f} s)")
    if wave + 1 >= len(policy.waves):
        return Decision(Action.DONE, f"{len(tally.committed)} device(s) committed")
    return Decision(Action.ADVANCE, f"wave {wave} healthy: {bad}/{decided} failed")


class RolloutController:
    """Publishes wave 0, widens wave by wave, and on abort restores the last committed release.

    Every step (started, advanced, aborted, restored, done) is recorded on the model's
    rollout log topic for the fleet's history. What an abort restores is chosen by
    ``restore`` sources (the fleet's store, the registry's champion), never by what the
    release topic held before: that may be a release the devices had rejected. The restore
    carries ``allow_downgrade`` and a new release id, so devices that took the new version go
    back, and the rest see their own version and do nothing.
    """

    def __init__(
        self,
        link: MqttLink,
        tree: TopicTree,
        channel: ReleaseChannel,
        policy: RolloutPolicy,
        on_decision: Callable[[Decision], None] | None = None,
        restore: Sequence[RestoreSource] = (),
        ignore: Collection[str] = (),
    ) -> None:
        self.link = link
        self.tree = tree
        self.channel = channel
        self.policy = policy
        self.tally = Tally()
        self.on_decision = on_decision
        self.restore_sources = tuple(restore)
        self.ignore = frozenset(ignore)  # devices known unable to take the release
        self.restored: ReleaseManifest | None = None
        self.restore_reason: str | None = None
        self._release_id: str | None = None
        self._record_seq = 0
        self._lock = threading.Lock()

    def _on_event(self, _topic: str, payload: bytes) -> None:
        message = safe_decode(payload)
        if isinstance(message, UpdateEvent) and message.device_id not in self.ignore:
            with self._lock:
                if message.release_id == self._release_id:
                    self.tally.record(message)

    def run(
        self,
        manifest: ReleaseManifest,
        base: ReleaseTarget,
        tick_s: float = 0.5,
        stop: threading.Event | None = None,
    ) -> Decision:
        """Drive the rollout of ``manifest`` to its end; returns the final decision."""
        self._release_id = manifest.release_id
        self.link.subscribe(self.tree.fleet_filter(Channel.EVENTS), self._on_event)
        wave = 0
        published = self._publish_wave(manifest, base, wave)
        self._record(published, "started", wave, "wave 0 published")
        started = time.monotonic()
        while stop is None or not stop.is_set():
            time.sleep(tick_s)
            with self._lock:
                decision = decide(self.policy, wave, self.tally, time.monotonic() - started)
            if self.on_decision is not None:
                self.on_decision(decision)
            if decision.action is Action.ADVANCE:
                wave += 1
                published = self._publish_wave(manifest, base, wave)
                self._record(published, "advanced", wave, decision.reason)
                started = time.monotonic()
            elif decision.action is Action.ABORT:
                self._record(published, "aborted", wave, decision.reason + self._outcomes())
                return self._roll_back(published, base, decision)
            elif decision.action is Action.DONE:
                self._record(published, "done", wave, decision.reason + self._outcomes())
                return decision
        self._record(published, "stopped", wave, "the rollout was stopped" + self._outcomes())
        return Decision(Action.WAIT, "stopped")

    def _outcomes(self) -> str:
        with self._lock:
            failed = ", ".join(f"{d}: {why}" for d, why in sorted(self.tally.failed.items()))
            committed = ", ".join(sorted(self.tally.committed))
        parts = [f"committed [{committed}]"] if committed else []
        if failed:
            parts.append(f"failed [{failed}]")
        return ("; " + "; ".join(parts)) if parts else ""

    def _publish_wave(
        self, manifest: ReleaseManifest, base: ReleaseTarget, wave: int
    ) -> ReleaseManifest:
        step = self.policy.waves[wave]
        target = ReleaseTarget(
            channel=base.channel,
            percent=step.percent,
            groups=tuple(base.groups) + step.groups,
            devices=base.devices,
            wave=wave,
            allow_downgrade=base.allow_downgrade,
        )
        signed = self.channel.publish(retarget(manifest, target, new_id=False))
        log.info("rollout of %s: wave %d (%g%%)", manifest.release_id, wave, step.percent)
        return signed

    def _record(
        self,
        manifest: ReleaseManifest,
        action: RolloutAction,
        wave: int,
        reason: str,
        restored: ReleaseManifest | None = None,
    ) -> None:
        """Tell the fleet's history what the rollout did; a lost record never stops it."""
        record = RolloutRecord(
            release_id=manifest.release_id,
            model=manifest.model,
            version=manifest.version,
            seq=self._record_seq,
            ts=utc_now(),
            action=action,
            wave=wave,
            audience=describe_rule(manifest.rollout),
            reason=reason[:2048],
            restored_release_id=restored.release_id if restored else None,
            restored_version=restored.version if restored else None,
            publisher=manifest.publisher,
        )
        self._record_seq += 1
        topic = self.tree.rollout_log(manifest.model)
        if not self.link.publish(topic, encode(record), qos=1).wait(RECORD_TIMEOUT_S):
            log.warning("rollout record %s of %s not acknowledged", action, manifest.release_id)

    def _roll_back(
        self, failing: ReleaseManifest, base: ReleaseTarget, decision: Decision
    ) -> Decision:
        choice = choose_restore(failing, self.restore_sources)
        self.restore_reason = choice.why
        if choice.manifest is None:
            log.error("rollout aborted (%s): %s", decision.reason, choice.why)
            self._record(failing, "restored", 0, choice.why)
            return Decision(Action.ABORT, f"{decision.reason}; {choice.why}")
        target = ReleaseTarget(channel=base.channel, percent=100.0, allow_downgrade=True)
        restored = self.channel.publish(retarget(choice.manifest, target, new_id=True))
        self.restored = restored
        why = f"re-released v{restored.version} as {restored.release_id}: {choice.why}"
        self._record(failing, "restored", 0, why, restored)
        log.warning("rollout aborted (%s): %s", decision.reason, why)
        return Decision(Action.ABORT, f"{decision.reason}; {why}")


def parse_waves(text: str, groups: Sequence[str] = ()) -> tuple[Wave, ...]:
    """``"5,25,100"`` → waves; ``groups`` join the first (canary) wave."""
    try:
        shares = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise ValueError(f"waves must be comma-separated percentages, got {text!r}") from e
    if not shares or any(not 0 <= s <= 100 for s in shares) or shares != sorted(shares):
        raise ValueError(f"waves must be increasing percentages in 0-100, got {text!r}")
    return tuple(Wave(s, tuple(groups) if i == 0 else ()) for i, s in enumerate(shares))
