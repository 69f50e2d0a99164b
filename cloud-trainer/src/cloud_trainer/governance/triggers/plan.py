"""Retraining triggers: their configuration and the pure planner that says what is due and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_trainer.governance.errors import GovernanceError

CauseKind = Literal["schedule", "labels", "drift", "manual"]
DAY = 86400.0


class ModelTrigger(BaseModel):
    """When one model is retrained, and on what."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Registered model name.")
    pipeline: Literal["weather", "catdog"]
    data: Path | None = Field(default=None, description="Training data (default: the pipeline's).")
    quick: bool = Field(default=False, description="The pipeline's quick mode.")
    arch: Literal["effnet-lite0", "small-cnn"] = "effnet-lite0"
    every_days: float | None = Field(
        default=None, gt=0, description="Retrain when the newest version is older than this."
    )
    min_new_labels: int | None = Field(
        default=None, ge=1, description="Retrain when this many labelled frames are unused."
    )
    retrain_on_drift: bool = Field(
        default=True, description="Retrain on the policy engine's retrain actions."
    )


class ReleasePlan(BaseModel):
    """How a promoted version would go out (shown by the dry run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str = "stable"
    waves: str = "10,50,100"


class TriggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelTrigger] = Field(min_length=1)
    release: ReleasePlan = Field(default_factory=ReleasePlan)

    @classmethod
    def load(cls, path: Path) -> TriggerConfig:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise GovernanceError(f"{path}: cannot read trigger config: {e}") from e
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(file)"
            raise GovernanceError(f"{path} · {where} · {first['msg']}") from e

    def model(self, name: str) -> ModelTrigger | None:
        return next((m for m in self.models if m.name == name), None)


@dataclass(frozen=True)
class DriftRequest:
    """A ``retrain`` action the policy engine recorded for a drift alert."""

    action_id: int
    alert_id: int
    decided_at: float
    detail: str


@dataclass(frozen=True)
class ModelState:
    """What the planner needs to know about one model, read from the stores."""

    last_trained: float | None
    unused_labels: int = 0
    drift: tuple[DriftRequest, ...] = ()


@dataclass(frozen=True)
class Cause:
    kind: CauseKind
    detail: str
    alert_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TriggerDecision:
    """One retraining that is due, with every reason it is due."""

    trigger: ModelTrigger
    causes: tuple[Cause, ...] = field(default_factory=tuple)

    @property
    def cause_kinds(self) -> str:
        return ",".join(c.kind for c in self.causes)


def plan_triggers(
    config: TriggerConfig, states: dict[str, ModelState], now: float
) -> list[TriggerDecision]:
    """Which models to retrain now; several causes for one model make one retraining."""
    due: list[TriggerDecision] = []
    for trigger in config.models:
        state = states.get(trigger.name, ModelState(last_trained=None))
        causes: list[Cause] = []
        if trigger.every_days is not None:
            if state.last_trained is None:
                causes.append(Cause("schedule", "no version trained yet"))
            else:
                age = now - state.last_trained
                if age >= trigger.every_days * DAY:
                    causes.append(
                        Cause(
                            "schedule",
                            f"newest version is {age / DAY:.1f} days old "
                            f"(every {trigger.every_days:g} days)",
                        )
                    )
        if trigger.min_new_labels is not None and state.unused_labels >= trigger.min_new_labels:
            causes.append(
                Cause(
                    "labels",
                    f"{state.unused_labels} labelled frames not yet trained on "
                    f"(threshold {trigger.min_new_labels})",
                )
            )
        if trigger.retrain_on_drift:
            fresh = [
                d
                for d in state.drift
                if state.last_trained is None or d.decided_at > state.last_trained
            ]
            if fresh:
                ids = tuple(sorted({d.alert_id for d in fresh}))
                causes.append(
                    Cause(
                        "drift",
                        f"retrain requested for drift alert(s) {', '.join(map(str, ids))}: "
                        f"{fresh[-1].detail}",
                        ids,
                    )
                )
        if causes:
            due.append(TriggerDecision(trigger, tuple(causes)))
    return due
