"""Drift policy: per-model rules mapping alerts to notify, retrain or roll back."""

from cloud_trainer.fleet.policy.engine import ActionHandler, PolicyDecision, PolicyEngine
from cloud_trainer.fleet.policy.rules import (
    AlertFacts,
    OpenEpisode,
    PlannedAction,
    PolicyConfig,
    PolicyConfigError,
    PolicyRule,
    plan_actions,
)

__all__ = [
    "ActionHandler",
    "AlertFacts",
    "OpenEpisode",
    "PlannedAction",
    "PolicyConfig",
    "PolicyConfigError",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyRule",
    "plan_actions",
]
