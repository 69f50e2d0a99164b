"""Schemathesis against the local API and the fleet API over loopback, plus raw bodies thrown
at /predict: whatever arrives, the answer is never a 5xx and the service keeps serving."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope, sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.api import ApiServer, create_app
from edge_agent.protocol import DeviceKind
from tests.integration.agent_fixtures import build_agent, camera_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "fuzz-operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def agent_api(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fuzz-agent")
    agent = build_agent(camera_config(workdir, mosquitto.port, frames=2), with_source=False)
    server = ApiServer(create_app(agent, token=None, max_request_bytes=256 * 1024), "127.0.0.1", 0)
    server.start()
    yield server.url
    server.stop()
    agent.store.close()


@pytest.fixture(scope="module")
def fleet_api(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fuzz-fleet")
    service = FleetService(
        FleetSettings(
            database_url=sqlite_url(workdir / "fleet.db"),
            broker_host=mosquitto.host,
            broker_port=mosquitto.port,
            root=f"fuzz{uuid.uuid4().hex[:6]}",
            http_port=0,
            api_tokens=parse_tokens(f"operator={TOKEN}"),
            samples_dir=workdir / "samples",
            max_sample_bytes=64 * 1024,
        )
    ).start()
    sims = [SimulatedDevice(f"cam-{i:02d}", "park", DeviceKind.CAMERA) for i in range(3)]
    service.store.ingest([Envelope(d.site, d.status(), time.time()) for d in sims])
    service.store.ingest([Envelope(d.site, d.drift(), time.time()) for d in sims])
    yield service.base_url
    service.stop()


def server_errors(base_url: str, headers: dict[str, str] | None = None) -> list[str]:
    """Every operation of the service's OpenAPI document, fuzzed; returns the 5xx seen.

    Cases are drawn per operation with Hypothesis from the schema (valid and edge values,
    path parameters, query strings, JSON bodies) and sent over loopback.
    """
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    found: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            found.append(f"invalid operation in the schema: {result.err()}")
            continue
        found.extend(_fuzz(result.ok(), headers))
    return found


def _fuzz(operation: Any, headers: dict[str, str] | None) -> list[str]:
    found: list[str] = []
    # An event stream runs until the client leaves: read it for a few seconds (its status
    # and first events are what can go wrong), then hang up; it takes no parameters to vary.
    stream = _streams(operation.definition.raw)
    timeout = (30.0, 3.0) if stream else 30.0

    @settings(EXAMPLES, max_examples=5 if stream else EXAMPLES.max_examples)
    @given(case=operation.as_strategy())
    def call(case: schemathesis.Case) -> None:
        response = case.call(headers=headers, timeout=timeout)
        if response.status_code >= 500 and response.status_code != 503:
            found.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:200]}"
            )

    call()
    return found


def _streams(definition: dict[str, Any]) -> bool:
    """Whether an operation answers with a server-sent event stream."""
    responses = definition.get("responses", {}).values()
    return any("text/event-stream" in (r.get("content") or {}) for r in responses)


def test_local_api_never_answers_5xx(agent_api: str) -> None:
    # No token is configured: state-changing commands answer 403 and nothing restarts.
    assert server_errors(agent_api) == []


def test_fleet_api_never_answers_5xx(fleet_api: str) -> None:
    # With a valid token, so the handlers behind authentication are exercised too.
    errors = server_errors(fleet_api, AUTH)
    assert errors == [], "\n".join(sorted(set(e[:160] for e in errors)))


def _png_like() -> st.SearchStrategy[bytes]:
    headers = st.sampled_from(
        [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b""]
    )
    return st.tuples(headers, st.binary(max_size=2048)).map(lambda t: t[0] + t[1])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(_png_like(), st.binary(max_size=512)),
    content_type=st.sampled_from(
        ["image/jpeg", "image/png", "application/octet-stream", "application/json", "text/plain"]
    ),
)
def test_predict_refuses_any_bad_body_with_a_4xx(
    agent_api: str, body: bytes, content_type: str
) -> None:
    response = httpx.post(
        f"{agent_api}/predict", content=body, headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert response.json()["detail"]


def test_services_still_serve_after_the_fuzzing(agent_api: str, fleet_api: str) -> None:
    assert httpx.get(f"{agent_api}/model", timeout=10).status_code == 200
    assert httpx.get(f"{fleet_api}/api/devices", headers=AUTH, timeout=10).status_code == 200


@pytest.fixture
def saturated_agent_api(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An agent API whose prediction slots are all taken, as under a sustained overload."""
    workdir = tmp_path_factory.mktemp("shed-agent")
    agent = build_agent(camera_config(workdir, mosquitto.port, frames=2), with_source=False)
    app = create_app(agent, token=None, max_request_bytes=256 * 1024, max_concurrent_predict=0)
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    yield server.url
    server.stop()
    agent.store.close()


def test_predict_sheds_before_reading_or_decoding_the_body(
    agent_api: str, saturated_agent_api: str
) -> None:
    # With every slot taken, a body that is not an image gets 503, not the 400 its decoding
    # would give, and an oversized body gets 503, not the 413 reading it would give: the
    # refusal comes before the body is read or decoded, which keeps refusals cheap.
    garbage = {"content": b"garbage", "headers": {"content-type": "image/jpeg"}}
    refused = httpx.post(f"{saturated_agent_api}/predict", timeout=10, **garbage)  # type: ignore[arg-type]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    huge = httpx.post(
        f"{saturated_agent_api}/predict",
        content=b"\xff" * (512 * 1024),
        headers={"content-type": "image/jpeg"},
        timeout=10,
    )
    assert huge.status_code == 503
    # The same bodies on a server with free slots: read, decoded and refused for what they are.
    assert httpx.post(f"{agent_api}/predict", timeout=10, **garbage).status_code == 400  # type: ignore[arg-type]
    big = httpx.post(
        f"{agent_api}/predict",
        content=b"\xff" * (512 * 1024),
        headers={"content-type": "image/jpeg"},
        timeout=10,
    )
    assert big.status_code == 413
