"""``promtool check metrics`` on what the agent and the fleet service really expose: names,
units, types and labels as Prometheus expects them, so scrapes and recording rules work."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.api import ApiServer, create_app
from edge_agent.runtime.agent import EdgeAgent
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.integration.dashboard_fixtures import AUTH, DashboardFleet, start_dashboard_fleet
from tests.support.onnx_models import red_frame

pytestmark = pytest.mark.integration

FRAMES = 12
API_PREDICTIONS = 3


def promtool_lint(exposition: str) -> tuple[int, str]:
    """promtool's exit code and everything it printed (nothing when the text is clean)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found: scripts/test.sh installs it (Debian package prometheus; "
            "as root: apt-get install --no-install-recommends prometheus)"
        )
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def _wait(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _samples(exposition: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one series name, e.g. ``{'{model="catdog",...}': 12.0}``."""
    found = {}
    for line in exposition.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")):
            series, _, value = line.rpartition(" ")
            found[series[len(name) :]] = float(value)
    return found


@pytest.fixture
def agent_api(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[tuple[EdgeAgent, str]]:
    """A running agent: its camera source through inference, publishing to a real broker."""
    agent = build_agent(camera_config(tmp_path, mosquitto.port, frames=FRAMES))
    server = ApiServer(create_app(agent, token="metrics-token"), "127.0.0.1", 0)
    agent.start(connect_timeout=10)
    server.start()
    yield agent, server.url
    server.stop()
    agent.stop()


def test_the_agents_metrics_pass_promtool(agent_api: tuple[EdgeAgent, str]) -> None:
    agent, url = agent_api
    before = httpx.get(f"{url}/metrics", timeout=10).text
    _wait(lambda: agent.predictions >= FRAMES and agent.publisher.stats.acked >= FRAMES)
    ok, jpeg = cv2.imencode(".jpg", red_frame())
    assert ok
    for _ in range(API_PREDICTIONS):
        answer = httpx.post(
            f"{url}/predict",
            content=jpeg.tobytes(),
            headers={"content-type": "image/jpeg"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    after = httpx.get(f"{url}/metrics", timeout=10).text

    # Clean before the first inference (quantiles NaN) and after, with every series present.
    assert promtool_lint(before) == (0, "")
    assert promtool_lint(after) == (0, "")

    assert "# TYPE edge_inference_latency_seconds summary" in after
    assert "edge_inference_latency_ms" not in after
    count = _samples(after, "edge_inference_latency_seconds_count")
    total = _samples(after, "edge_inference_latency_seconds_sum")
    quantiles = _samples(after, "edge_inference_latency_seconds")
    assert list(count.values()) == [FRAMES + API_PREDICTIONS]
    # Seconds, not milliseconds: a tiny model runs well under a second per frame.
    assert 0 < next(iter(total.values())) < count[next(iter(count))]
    assert len(quantiles) == 2 and all(0 < v < 1 for v in quantiles.values())
    ratio = _samples(after, "edge_cpu_usage_ratio")
    assert all(0 <= v <= 1 for v in ratio.values())


@pytest.fixture(scope="module")
def fleet(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardFleet]:
    running = start_dashboard_fleet(mosquitto, tmp_path_factory.mktemp("promtool-fleet"))
    yield running
    running.stop()


def test_the_fleet_services_metrics_pass_promtool(fleet: DashboardFleet) -> None:
    with httpx.Client(base_url=fleet.base_url, headers=AUTH, timeout=10) as http:
        assert http.get("/api/devices").status_code == 200
        assert http.get("/api/releases/no-such-release").status_code == 404
        assert http.post("/api/session", headers=AUTH).status_code == 200
        exposition = http.get("/metrics").text
    assert promtool_lint(exposition) == (0, "")
    # The seeded fleet really went through ingest: these are live series, not just headers.
    assert _samples(exposition, "fleet_messages_received_total")
    assert _samples(exposition, "fleet_http_requests_total")
