"""Drift policy rules (YAML/pydantic) and their pure evaluation into planned actions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ActionName = Literal["notify", "retrain", "rollback"]
Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class PolicyConfigError(ValueError):
    """A policy file is unreadable or invalid; the message names the file and the key."""


class PolicyRule(BaseModel):
    """When a raised drift alert matches, plan ``actions`` for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, title="Rule name", description="Recorded.")
    model: str = Field(
        default="*", title="Model", description="Model name the rule applies to, '*' for any."
    )
    detectors: list[str] = Field(
        default_factory=list, title="Detectors", description="Only these detectors; empty: any."
    )
    metrics: list[str] = Field(
        default_factory=list,
        title="Metrics",
        description="Only alerts with a feature scored by one of these (psi, accuracy, ...).",
    )
    min_severity: Severity = Field(default="warning", title="Minimum severity")
    min_score_ratio: float = Field(
        default=1.0,
        ge=0,
        title="Minimum score/threshold",
        description="Some feature's score must reach this multiple of its threshold.",
    )
    min_devices: int = Field(
        default=1,
        ge=1,
        title="Minimum devices",
        description="Devices running the same model version with drift open at the same time.",
    )
    actions: list[ActionName] = Field(min_length=1, title="Actions")


class PolicyConfig(BaseModel):
    """Rules are all evaluated; an action planned twice for one alert is planned once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[PolicyRule] = Field(default_factory=list)
    cooldown_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        title="Cooldown",
        description="After an action, the same action for the same episode waits this long.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyConfig:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return self

    @classmethod
    def default(cls) -> PolicyConfig:
        """Notify on every drift alert; acting on models is opted into per model."""
        return cls(rules=[PolicyRule(name="notify-all", actions=["notify"])])

    @classmethod
    def load(cls, path: Path) -> PolicyConfig:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise PolicyConfigError(f"{path}: cannot read policy: {e}") from e
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(file)"
            raise PolicyConfigError(f"{path} · {where} · {first['msg']}") from e


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What the rules look at: one raised (or cleared) alert and its device episode."""

    alert_id: int
    device_id: str
    model_name: str
    model_version: int
    detector: str
    severity: str
    state: str
    metrics: frozenset[str]
    max_score_ratio: float
    episode_alert_id: int


@dataclass(frozen=True, slots=True)
class OpenEpisode:
    device_id: str
    detector: str
    model_version: int


@dataclass(frozen=True, slots=True)
class PlannedAction:
    action: ActionName
    rule: str
    episode_key: str
    reason: str


def episode_key(action: ActionName, alert: AlertFacts) -> str:
    """Which episode an action belongs to: it is taken at most once per key (and cooldown).

    ``notify`` is per device episode (a detector raising until it clears). ``retrain`` and
    ``rollback`` act on a model version, so all devices drifting on it share one episode.
    """
    if action == "notify":
        return (
            f"notify/{alert.model_name}/{alert.device_id}/{alert.detector}/{alert.episode_alert_id}"
        )
    return f"{action}/{alert.model_name}/{alert.model_version}"


def _matches(rule: PolicyRule, alert: AlertFacts, drifting_devices: int) -> str | None:
    """The reason the rule fires, or None."""
    if rule.model not in ("*", alert.model_name):
        return None
    if rule.detectors and alert.detector not in rule.detectors:
        return None
    if rule.metrics and not alert.metrics.intersection(rule.metrics):
        return None
    if SEVERITY_RANK.get(alert.severity, 0) < SEVERITY_RANK[rule.min_severity]:
        return None
    if alert.max_score_ratio < rule.min_score_ratio:
        return None
    if drifting_devices < rule.min_devices:
        return None
    return (
        f"{alert.detector} {alert.severity} on {alert.device_id} "
        f"(score {alert.max_score_ratio:.2f}x threshold, {drifting_devices} device(s) drifting)"
    )


def plan_actions(
    alert: AlertFacts, open_episodes: list[OpenEpisode], config: PolicyConfig
) -> list[PlannedAction]:
    """Actions for one alert, in rule order; a cleared alert plans nothing."""
    if alert.state != "raised":
        return []
    drifting = {e.device_id for e in open_episodes if e.model_version == alert.model_version} | {
        alert.device_id
    }
    planned: dict[tuple[str, str], PlannedAction] = {}
    for rule in config.rules:
        reason = _matches(rule, alert, len(drifting))
        if reason is None:
            continue
        for action in rule.actions:
            key = episode_key(action, alert)
            planned.setdefault((action, key), PlannedAction(action, rule.name, key, reason))
    return list(planned.values())
