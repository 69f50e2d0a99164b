"""Fixtures for real services: a private Mosquitto per session and a throwaway MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_trainer.stack.mlflow_store import MlflowStore
from cloud_trainer.stack.mosquitto import BrokerUnavailable, MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGE_MLOPS_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One real Mosquitto on a free loopback port for the whole session."""
    broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    try:
        broker.start()
    except BrokerUnavailable as e:
        pytest.fail(f"{e} (scripts/test.sh installs it when run as root)")
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """An admin URL of a PostgreSQL for tests: EDGE_MLOPS_TEST_POSTGRES when set, else a
    private server of this session's own (skipped, saying why, where none can run)."""
    external = os.environ.get("EDGE_MLOPS_TEST_POSTGRES")
    if external:
        yield external
        return
    from cloud_trainer.stack.postgres import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as e:
        pytest.skip(f"no private PostgreSQL: {e}")
    yield server.url
    server.close()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker of the test's own, for tests that stop, kill or reconfigure it."""
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def broker_endpoint(mosquitto: MosquittoBroker) -> BrokerEndpoint:
    return BrokerEndpoint(mosquitto.host, mosquitto.port)


@pytest.fixture
def mlflow_store(tmp_path: Path) -> MlflowStore:
    """A throwaway MLflow store (SQLite + local artefacts), active for the test."""
    store = MlflowStore.local(tmp_path / "mlflow")
    store.activate()
    return store


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
