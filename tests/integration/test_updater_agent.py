"""The updater inside the agent runtime: events through the outbox, commands through the router."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.device import DeviceConfig
from edge_agent.protocol import (
    Channel,
    Command,
    PredictionMessage,
    UpdateEvent,
    UpdateState,
    decode_message,
    utc_now,
)
from edge_agent.runtime.agent import EdgeAgent
from edge_agent.sources.sample import Sample
from edge_agent.updater.agent_link import attach, build_updater
from edge_agent.updater.service import ModelUpdater
from tests.integration.updater_fixtures import Fleet, fleet
from tests.support.mqtt import Collector
from tests.support.onnx_models import red_frame

pytestmark = pytest.mark.integration
__all__ = ["fleet"]


@dataclass
class RunningAgent:
    agent: EdgeAgent
    updater: ModelUpdater
    collector: Collector

    def seen(self, kind: type, check: Callable[[Any], bool]) -> bool:
        for _t, payload in list(self.collector.messages):
            message = decode_message(payload)
            if isinstance(message, kind) and check(message):
                return True
        return False

    def wait_seen(self, kind: type, check: Callable[[Any], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not self.seen(kind, check):
            assert time.monotonic() < deadline, what
            time.sleep(0.05)


@contextmanager
def running_agent(fleet: Fleet, tmp_path: Path, v1: Path, **updates: Any) -> Iterator[RunningAgent]:
    """A camera agent on the fleet's broker with v1 committed, fed red frames every 5 ms."""
    config = DeviceConfig.model_validate(
        {
            "device_id": "cam-01",
            "site": "lab",
            "kind": "camera",
            "source": {"type": "camera", "uri": "unused"},
            "broker": {
                "host": fleet.endpoint.host,
                "port": fleet.endpoint.port,
                "topic_root": fleet.root,
            },
            "model": {"path": str(v1), "version": 1},
            "limits": {"outbox_path": str(tmp_path / "outbox.db")},
            "updates": fleet.config(tmp_path, **updates).model_dump(mode="json"),
        }
    )
    assert config.updates is not None
    updater, engine, sink = build_updater(
        config.updates,
        model="catdog",
        device_id=config.device_id,
        groups=list(config.groups),
        provisioned=v1,
        provisioned_version=1,
    )
    agent = EdgeAgent(config, engine, source=None)
    attach(agent, updater, sink)
    stop = threading.Event()

    def frames() -> None:
        n = 0
        while not stop.is_set():
            agent.handle_sample(Sample(ts=datetime.now(UTC), input_id=f"f{n}", frame=red_frame()))
            n += 1
            time.sleep(0.005)

    with Collector(fleet.endpoint, f"{fleet.root}/lab/cam-01/+") as collector:
        agent.start(connect_timeout=10)
        feeder = threading.Thread(target=frames, daemon=True)
        feeder.start()
        try:
            yield RunningAgent(agent, updater, collector)
        finally:
            stop.set()
            feeder.join(5)
            agent.stop()
            updater.stop()


def test_agent_takes_a_release_reports_it_and_obeys_rollback(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    with running_agent(fleet, tmp_path, v1) as running:
        agent, updater = running.agent, running.updater
        manifest = fleet.publish(v2, 2)
        running.wait_seen(
            UpdateEvent,
            lambda e: e.release_id == manifest.release_id and e.state is UpdateState.COMMITTED,
            "committed event not published by the agent",
        )
        running.wait_seen(
            PredictionMessage, lambda p: p.model_version == 2, "no prediction from version 2"
        )
        ack = agent.run_command(
            Command(
                device_id="cam-01",
                ts=utc_now(),
                seq=1,
                cmd_id="c1",
                action="rollback",
                issued_by="cloud",
            )
        )
        assert ack.result == "done", ack.detail
        assert updater.state.active is not None and updater.state.active.version == 1
        bad = agent.run_command(
            Command(
                device_id="cam-01",
                ts=utc_now(),
                seq=2,
                cmd_id="c2",
                action="pin",
                args={"version": 99},
                issued_by="cloud",
            )
        )
        assert bad.result == "rejected" and "not stored" in (bad.detail or "")
        topics = {t for t, _p in running.collector.messages}
        assert fleet.tree.device("lab", "cam-01", Channel.EVENTS) in topics


@pytest.mark.parametrize("mode", ["shadow", "live"])
def test_a_flipped_release_never_answers_in_shadow_probation(
    fleet: Fleet, tmp_path: Path, mode: str
) -> None:
    """A release whose answers are reversed is rolled back in both probation modes, but only
    shadow-first probation keeps every one of its answers off the wire."""
    v1, flipped = fleet.model("v1"), fleet.model("v2", bias=20.0)  # v2 says dog to red frames
    probation = {"mode": mode, "shadow": True, "max_disagreement": 0.2, "frames": 40}
    smoke = {"latency_budget_factor": 1.0}  # judged by probation here, not by a loaded smoke
    with running_agent(fleet, tmp_path, v1, probation=probation, smoke=smoke) as running:
        manifest = fleet.publish(flipped, 2)
        running.wait_seen(
            UpdateEvent,
            lambda e: e.release_id == manifest.release_id and e.state is UpdateState.ROLLED_BACK,
            "the flipped release was not rolled back",
        )
        # Predictions published after the rollback are all v1 again; wait for some.
        n = len(running.collector.messages)
        deadline = time.monotonic() + 10
        while len(running.collector.messages) < n + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        predictions = [
            m
            for _t, payload in list(running.collector.messages)
            if isinstance(m := decode_message(payload), PredictionMessage)
        ]
        by_flipped = [p for p in predictions if p.model_version == 2]
        assert running.updater.state.active is not None
        assert running.updater.state.active.version == 1
        assert predictions and all(p.label == "cat" for p in predictions if p.model_version == 1)
        if mode == "shadow":
            assert by_flipped == [], f"{len(by_flipped)} answers from the rejected model"
        else:
            assert by_flipped and all(p.label == "dog" for p in by_flipped)
