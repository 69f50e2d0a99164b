"""A real agent on a real Mosquitto: a command sent twice runs once, also after a restart."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.api import ApiServer, create_app
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import Command, encode, utc_now
from edge_agent.runtime.agent import EdgeAgent
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.support.mqtt import Collector

pytestmark = pytest.mark.integration
# A device of its own: the retained status it leaves on the session broker is no other test's.
DEVICE = "cam-idem"
CMD_TOPIC = f"mlops/park/{DEVICE}/cmd"
TOKEN = "idempotency-test-token"


class CaptureCounter:
    def __init__(self) -> None:
        self.runs: list[str] = []

    def __call__(self, command: Command) -> str:
        self.runs.append(command.cmd_id)
        return f"captured {len(self.runs)}"


def _started(config_tmp: Path, port: int) -> tuple[EdgeAgent, CaptureCounter]:
    config = camera_config(config_tmp, port).model_copy(update={"device_id": DEVICE})
    agent = build_agent(config, with_source=False)
    counter = CaptureCounter()
    agent.command_handler("capture", counter)
    agent.start(connect_timeout=10)
    return agent, counter


def _send(endpoint: BrokerEndpoint, *cmd_ids: str) -> None:
    cloud = MqttLink(endpoint, client_id=f"cloud-{'-'.join(cmd_ids)}")
    cloud.start()
    try:
        for cmd_id in cmd_ids:
            command = Command(
                device_id=DEVICE,
                ts=utc_now(),
                seq=1,
                cmd_id=cmd_id,
                action="capture",
                issued_by="cloud",
            )
            cloud.publish(CMD_TOPIC, encode(command)).wait(5)
    finally:
        cloud.stop()


def _acks(collector: Collector, count: int, after: frozenset[int] = frozenset()) -> list[dict]:
    """``count`` acks, told apart by seq (the outbox may send one again after a restart)."""

    def new(messages: list[tuple[str, bytes]]) -> dict[int, dict]:
        acks = (json.loads(p) for t, p in messages if t.endswith("/cmd/ack"))
        return {a["seq"]: a for a in acks if a["seq"] not in after}

    assert collector.wait_until(lambda m: len(new(m)) >= count, timeout=20)
    return [ack for _seq, ack in sorted(new(collector.messages).items())]


def test_a_command_sent_twice_runs_once_also_after_a_restart(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    with Collector(endpoint, f"{CMD_TOPIC}/ack") as collector:
        agent, counter = _started(tmp_path, mosquitto.port)
        try:
            _send(endpoint, "cap-1", "cap-1")
            first, second = _acks(collector, 2)
        finally:
            agent.stop()
        assert counter.runs == ["cap-1"]
        assert first["cmd_id"] == second["cmd_id"] == "cap-1"
        assert (first["result"], first["detail"]) == ("done", "captured 1")
        assert second["result"] == "done"
        assert str(second["detail"]).startswith("duplicate of cap-1, done at ")
        assert str(second["detail"]).endswith(": captured 1")

        # A new process on the same data folder remembers the id; a new id still runs.
        assert tmp_path.joinpath("outbox.commands.json").is_file()
        agent, counter = _started(tmp_path, mosquitto.port)
        try:
            _send(endpoint, "cap-1", "cap-2")
            acks = _acks(collector, 2, after=frozenset({first["seq"], second["seq"]}))
        finally:
            agent.stop()
    assert counter.runs == ["cap-2"]
    by_id = {a["cmd_id"]: a for a in acks}
    assert str(by_id["cap-1"]["detail"]).startswith("duplicate of cap-1, done at ")
    assert by_id["cap-2"]["detail"] == "captured 1"


def test_the_local_api_runs_a_command_once_per_idempotency_key(tmp_path: Path) -> None:
    agent = build_agent(camera_config(tmp_path, 1), with_source=False)
    counter = CaptureCounter()
    agent.command_handler("capture", counter)
    server = ApiServer(create_app(agent, token=TOKEN), "127.0.0.1", 0)
    server.start()
    try:
        auth = {"authorization": f"Bearer {TOKEN}"}
        keyed = {**auth, "idempotency-key": "op-42"}
        first = httpx.post(f"{server.url}/commands/capture", headers=keyed)
        retry = httpx.post(f"{server.url}/commands/capture", headers=keyed)
        assert first.status_code == retry.status_code == 200
        assert first.json() == {"cmd_id": "local-op-42", "result": "done", "detail": "captured 1"}
        assert retry.json()["detail"].startswith("duplicate of local-op-42, done at ")
        assert counter.runs == ["local-op-42"]
        # Without a key every call is a command of its own (a random id, not the clock).
        plain = [httpx.post(f"{server.url}/commands/capture", headers=auth) for _ in range(2)]
        assert [r.json()["detail"] for r in plain] == ["captured 2", "captured 3"]
        assert len(set(counter.runs)) == 3
    finally:
        server.stop()
        agent.store.close()
