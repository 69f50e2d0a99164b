"""``edge-agent run`` and ``doctor`` as real processes: SIGTERM flushes, exit codes hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloud_trainer.stack.mosquitto import MosquittoBroker, free_port
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.outbox import OutboxStore
from tests.integration.agent_fixtures import camera_config
from tests.support.mqtt import Collector

pytestmark = pytest.mark.integration


def _write(tmp_path: Path, port: int, **source) -> Path:
    config = camera_config(tmp_path, port, frames=20).model_dump(mode="json", exclude_none=True)
    config["source"].update(source)
    config["api"] = {"enabled": False}
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent", *args]


def test_run_until_sigterm_flushes_and_says_offline(tmp_path: Path, mosquitto: MosquittoBroker):
    path = _write(tmp_path, mosquitto.port, on_end="loop", fps=20, pace="realtime")
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    with Collector(endpoint, "mlops/park/cam-01/#") as collector:
        proc = subprocess.Popen(_agent("run", "--config", str(path)), stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(t.endswith("/predictions") for t, _p in collector.messages) >= 10:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        time.sleep(0.3)
        messages = list(collector.messages)
    assert proc.returncode == 0, err.decode()[-2000:]
    statuses = [json.loads(p)["state"] for t, p in messages if t.endswith("/status")]
    assert statuses[0] == "online" and statuses[-1] == "offline"
    predictions = [json.loads(p)["seq"] for t, p in messages if t.endswith("/predictions")]
    assert len(predictions) >= 10
    store = OutboxStore(Path(yaml.safe_load(path.read_text())["limits"]["outbox_path"]))
    assert store.depth == 0  # everything queued before SIGTERM reached the broker


def test_run_with_unreachable_broker_keeps_predictions_on_disk(tmp_path: Path):
    path = _write(tmp_path, free_port(), on_end="close")
    config = yaml.safe_load(path.read_text())
    config["limits"]["flush_timeout_s"] = 0.5
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        _agent("run", "--config", str(path), "--exit-at-end"), capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    store = OutboxStore(Path(config["limits"]["outbox_path"]))
    payloads = [json.loads(r.payload) for r in store.fetch(-1, 1000)]
    assert sum(p["type"] == "prediction" for p in payloads) == 20


def test_doctor_exit_codes(tmp_path: Path, mosquitto: MosquittoBroker):
    good = _write(tmp_path, mosquitto.port, on_end="close")
    ok = subprocess.run(_agent("doctor", "--config", str(good)), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    assert [line.split()[1] for line in ok.stdout.splitlines()] == [
        "clock",
        "disk",
        "model",
        "source",
        "broker",
        "api",
    ]
    config = yaml.safe_load(good.read_text())
    config["broker"]["port"] = free_port()
    bad_broker = tmp_path / "bad-broker.yaml"
    bad_broker.write_text(yaml.safe_dump(config))
    failed = subprocess.run(
        _agent("doctor", "--config", str(bad_broker)), capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert any(line.startswith("FAIL broker") for line in failed.stdout.splitlines())
    config["brokr"] = {}
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(yaml.safe_dump(config))
    bad = subprocess.run(_agent("doctor", "--config", str(invalid)), capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean 'broker'?" in bad.stdout
    assert os.path.exists(good)
