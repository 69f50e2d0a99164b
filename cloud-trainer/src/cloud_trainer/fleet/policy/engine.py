"""The policy engine: turns new drift alerts into recorded actions run by pluggable handlers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.policy.rules import (
    ActionName,
    AlertFacts,
    OpenEpisode,
    PlannedAction,
    PolicyConfig,
    plan_actions,
)
from cloud_trainer.fleet.store import FleetStore, StoredAlert

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What a handler is asked to do, with the alert that caused it."""

    action_id: int
    action: ActionName
    rule: str
    reason: str
    model_name: str
    model_version: int
    device_id: str
    site: str
    alert_id: int


# A handler returns a one-line detail to record, or raises to mark the action failed.
ActionHandler = Callable[[PolicyDecision], str | None]


def log_notification(decision: PolicyDecision) -> str:
    log.warning(
        "drift on %s/%s (model %s v%s): %s",
        decision.site,
        decision.device_id,
        decision.model_name,
        decision.model_version,
        decision.reason,
    )
    return "logged"


def facts_of(stored: StoredAlert, episode_alert_id: int) -> AlertFacts:
    alert = stored.alert
    ratios = [
        abs(f.score) / abs(f.threshold) if f.threshold else float("inf") for f in alert.features
    ]
    return AlertFacts(
        alert_id=stored.alert_id,
        device_id=alert.device_id,
        model_name=alert.model_name,
        model_version=alert.model_version,
        detector=alert.detector,
        severity=alert.severity,
        state=alert.state,
        metrics=frozenset(f.metric for f in alert.features),
        max_score_ratio=max(ratios),
        episode_alert_id=episode_alert_id,
    )


class PolicyEngine:
    """Plans with the pure rules, claims each action in the store, runs handlers off-thread.

    Claiming in the store (not in memory) is what keeps two service instances from acting
    twice on one episode. ``retrain`` and ``rollback`` are callables supplied by whoever
    wires the closed loop; without one, the action is recorded as ``skipped``.
    """

    def __init__(
        self,
        store: FleetStore,
        config: PolicyConfig,
        metrics: FleetMetrics,
        handlers: Mapping[ActionName, ActionHandler] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.handlers: dict[ActionName, ActionHandler] = {"notify": log_notification}
        self.handlers.update(handlers or {})
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fleet-policy")
        self._pending: list[Future[None]] = []

    def close(self, timeout: float = 10.0) -> None:
        self.wait(timeout)
        self._pool.shutdown(wait=True)

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait for the handlers started so far (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        for future in list(self._pending):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                future.result(timeout=left)
            except TimeoutError:
                return False
        self._pending = [f for f in self._pending if not f.done()]
        return True

    def on_alerts(self, alerts: list[StoredAlert]) -> None:
        """Called by the batch writer after the alerts are committed."""
        for stored in alerts:
            try:
                self._handle(stored)
            except Exception:  # supervisor boundary: one alert must not stop the others
                log.exception("policy failed for alert %s", stored.alert_id)

    def _handle(self, stored: StoredAlert) -> None:
        alert = stored.alert
        episodes = self.store.open_episodes(alert.model_name)
        own = next(
            (
                e
                for e in episodes
                if e["device_id"] == alert.device_id and e["detector"] == alert.detector
            ),
            None,
        )
        facts = facts_of(stored, int(own["alert_id"]) if own else stored.alert_id)
        open_episodes = [
            OpenEpisode(e["device_id"], e["detector"], int(e["model_version"])) for e in episodes
        ]
        for planned in plan_actions(facts, open_episodes, self.config):
            self._claim_and_run(planned, stored)

    def _claim_and_run(self, planned: PlannedAction, stored: StoredAlert) -> None:
        alert = stored.alert
        now = time.time()
        action_id = self.store.claim_policy_action(
            {
                "alert_id": stored.alert_id,
                "episode_key": planned.episode_key,
                "rule": planned.rule,
                "action": planned.action,
                "model_name": alert.model_name,
                "model_version": alert.model_version,
                "device_id": alert.device_id,
                "decided_at": now,
                "status": "pending",
                "detail": planned.reason,
            },
            self.config.cooldown_s,
        )
        if action_id is None:
            self.metrics.inc("fleet_policy_actions_total", action=planned.action, outcome="held")
            log.debug("%s already taken for %s", planned.action, planned.episode_key)
            return
        decision = PolicyDecision(
            action_id=action_id,
            action=planned.action,
            rule=planned.rule,
            reason=planned.reason,
            model_name=alert.model_name,
            model_version=alert.model_version,
            device_id=alert.device_id,
            site=stored.site,
            alert_id=stored.alert_id,
        )
        self._pending.append(self._pool.submit(self._run, decision))

    def _run(self, decision: PolicyDecision) -> None:
        handler = self.handlers.get(decision.action)
        detail: str | None
        if handler is None:
            status, detail = "skipped", f"no {decision.action} handler configured"
        else:
            try:
                status, detail = "done", handler(decision)
            except Exception as e:  # a handler is foreign code: record, never propagate
                log.exception("%s handler failed for %s", decision.action, decision.model_name)
                status, detail = "failed", f"{type(e).__name__}: {e}"
        self.store.finish_policy_action(decision.action_id, status, detail)
        self.metrics.inc("fleet_policy_actions_total", action=decision.action, outcome=status)
        log.info(
            "policy %s for %s v%s: %s (%s)",
            decision.action,
            decision.model_name,
            decision.model_version,
            status,
            detail,
        )
