"""Schemathesis, with every check it runs by default, against a real fleet service: the OpenAPI
document must say what the service does (status codes, bodies, content types, headers, what it
accepts and what it refuses), not only that it never answers 5xx.

The run is the one ``st run`` makes (examples, coverage, fuzzing and stateful phases), driven
through schemathesis's engine: its pytest plugin (4.32.5) reads `request.node._nodeid`, which
pytest 9.2 no longer has.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import schemathesis.engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.schemas import BaseSchema

from cloud_trainer.registry.location import STORE_ENV
from cloud_trainer.stack.mosquitto import MosquittoBroker
from tests.integration.dashboard_fixtures import TOKEN, DashboardFleet, start_dashboard_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261204
# Cases per operation and phase: about 1,400 requests in all, some 25 s on two cores.
EXAMPLES = 25
# Schemathesis's default for the check, repeated so the one exception below extends it.
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


@pytest.fixture(scope="module")
def fleet(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardFleet]:
    """Seeded devices, telemetry, alerts and two signed releases; a signing key, so promote and
    roll back act for real; an empty registry of its own for the governance routes."""
    workdir = tmp_path_factory.mktemp("schemathesis-fleet")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STORE_ENV, str(workdir / "mlflow"))
        running = start_dashboard_fleet(mosquitto, workdir)
        yield running
        running.stop()


def run_config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            # No state carried over from earlier runs (nor a .schemathesis/ folder left behind).
            "cache": {"enabled": False},
            "auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}},
            "request-timeout": 30,
            # /api/events streams until the client leaves: read its first event, then hang up.
            "max-stream-events": 1,
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "operations": [
                {
                    # A sample that exists but is not an image answers 415 (LabelQueue's code,
                    # which tests/integration/test_governance.py pins); no schema can say which
                    # sample ids are images. 404 would be the truer answer.
                    "include-method": "GET",
                    "include-path": "/api/labelling/samples/{sample_id}/image",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [*POSITIVE_ACCEPTED, "415"]
                        }
                    },
                }
            ],
        }
    )


def findings(schema: BaseSchema) -> tuple[list[str], int]:
    """Every distinct failure and error of a full run, one line each; and the requests made."""
    found: set[str] = set()
    requests = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            requests += len(event.recorder.interactions)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        message = failure.message.strip().splitlines()[0][:160]
                        found.add(f"{failure.code} {failure.operation}: {failure.title}: {message}")
        elif isinstance(event, events.NonFatalError):
            found.add(f"error {event.label}: {event.value!r}"[:240])
        elif isinstance(event, events.FatalError):
            found.add(f"fatal: {event.exception!r}"[:240])
        elif isinstance(event, events.EngineFinished):
            found.update(f"{f.code} {f.operation}: {f.title}" for f in event.failures)
    return sorted(found), requests


@pytest.mark.timeout(300)
def test_the_fleet_api_does_what_its_openapi_document_says(fleet: DashboardFleet) -> None:
    schema = schemathesis.openapi.from_url(f"{fleet.base_url}/openapi.json", config=run_config())
    operations = sum(1 for _ in schema.get_all_operations())
    assert operations > 20, f"only {operations} operations in the document"
    found, requests = findings(schema)
    assert requests > 20 * operations, f"only {requests} requests for {operations} operations"
    assert found == [], f"{len(found)} schemathesis findings:\n" + "\n".join(found)
    assert httpx.get(f"{fleet.base_url}/readyz", timeout=10).status_code == 200
