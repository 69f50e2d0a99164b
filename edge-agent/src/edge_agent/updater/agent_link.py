"""Wiring the updater into the agent runtime through its extension points only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.inference import InferenceEngine
from edge_agent.protocol.messages import Command, CommandAction, UpdateEvent
from edge_agent.updater.boot import ProvisionedModel
from edge_agent.updater.config import UpdaterConfig
from edge_agent.updater.errors import UpdateError
from edge_agent.updater.service import ModelUpdater

if TYPE_CHECKING:
    from edge_agent.runtime.agent import EdgeAgent

log = logging.getLogger(__name__)

UPDATER_COMMANDS: tuple[CommandAction, ...] = ("rollback", "pin", "unpin", "update_check")


class DeferredSink:
    """Holds update events until the agent's outbox exists, then forwards them to it.

    The updater is built (and boots the model) before the agent that will carry its events.
    """

    def __init__(self) -> None:
        self.target: Callable[[UpdateEvent], object] | None = None
        self._held: list[UpdateEvent] = []

    def __call__(self, event: UpdateEvent) -> None:
        if self.target is None:
            self._held.append(event)
            return
        self.target(event)

    def connect(self, target: Callable[[UpdateEvent], object]) -> None:
        self.target = target
        held, self._held = self._held, []
        for event in held:
            target(event)


def build_updater(
    config: UpdaterConfig,
    *,
    model: str,
    device_id: str,
    groups: list[str],
    provisioned: Path | None,
    provisioned_version: int,
) -> tuple[ModelUpdater, InferenceEngine, DeferredSink]:
    """The updater and the engine it chose to serve; pass the engine to ``EdgeAgent``."""
    sink = DeferredSink()
    updater = ModelUpdater(
        config,
        model=model,
        device_id=device_id,
        groups=groups,
        sink=sink,
        next_seq=lambda: 0,  # the agent's outbox stamps the real sequence number
    )
    initial = ProvisionedModel(provisioned, provisioned_version) if provisioned else None
    engine = updater.boot(initial)
    return updater, engine, sink


def attach(agent: EdgeAgent, updater: ModelUpdater, sink: DeferredSink) -> None:
    """Route live calls through probation, answer update commands, send events, take releases."""
    from edge_agent.runtime.commands import CommandRejected

    sink.connect(agent.publish_event)
    agent.set_predictor(updater.predict)
    agent.set_version_of(lambda engine: _version_of(updater, engine))

    def handle(command: Command) -> str | None:
        result, detail = updater.command(command.action, command.args)
        if result == "rejected":
            raise CommandRejected(detail or "rejected")
        if result == "failed":
            raise UpdateError(detail or "failed")
        return detail

    for action in UPDATER_COMMANDS:
        agent.command_handler(action, handle)
    updater.start(agent.slot)
    updater.subscribe(agent.link, agent.tree)
    log.info("updater attached for model %s", updater.model)


def _version_of(updater: ModelUpdater, engine: InferenceEngine) -> int:
    """The registry version of the engine serving (trial or committed), 0 if unknown."""
    state = updater.state
    for record in (state.trial, state.active, *state.previous):
        if record is not None and record.sha256 == engine.sha256:
            return record.version
    return 0
