"""The updater inside the agent runtime: events through the outbox, commands through the router."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

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
from tests.integration.updater_fixtures import Fleet, fleet
from tests.support.mqtt import Collector
from tests.support.onnx_models import red_frame

pytestmark = pytest.mark.integration
__all__ = ["fleet"]


def test_agent_takes_a_release_reports_it_and_obeys_rollback(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    updates = fleet.config(tmp_path).model_dump(mode="json")
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
            "updates": updates,
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

    device_topics = f"{fleet.root}/lab/cam-01/+"
    with Collector(fleet.endpoint, device_topics) as collector:
        agent.start(connect_timeout=10)
        feeder = threading.Thread(target=frames, daemon=True)
        feeder.start()
        try:
            manifest = fleet.publish(v2, 2)

            def seen(kind: type, check) -> bool:
                for _t, payload in list(collector.messages):
                    message = decode_message(payload)
                    if isinstance(message, kind) and check(message):
                        return True
                return False

            deadline = time.monotonic() + 30
            while not seen(
                UpdateEvent,
                lambda e: e.release_id == manifest.release_id and e.state is UpdateState.COMMITTED,
            ):
                assert time.monotonic() < deadline, "committed event not published by the agent"
                time.sleep(0.05)
            while not seen(PredictionMessage, lambda p: p.model_version == 2):
                assert time.monotonic() < deadline, "no prediction from version 2"
                time.sleep(0.05)
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
            topics = {t for t, _p in collector.messages}
            assert fleet.tree.device("lab", "cam-01", Channel.EVENTS) in topics
        finally:
            stop.set()
            feeder.join(5)
            agent.stop()
            updater.stop()
