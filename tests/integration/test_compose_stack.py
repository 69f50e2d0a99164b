"""The compose stack's processes, started directly with the same config files (no Docker here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloud_trainer.stack.mosquitto import find_mosquitto, free_port
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from tests.support.secured_broker import ProvisionedFleet, broker_user_lines

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
PG_HOST, PG_PORT = "127.0.0.1", 5432


def localise(text: str, secrets: Path, data: Path, tls: int, mtls: int) -> str:
    """The container's paths and ports mapped onto this machine; nothing else changes."""
    return (
        text.replace("/mosquitto/secrets", str(secrets))
        .replace("/mosquitto/data", str(data))
        .replace("8883", str(tls))
        .replace("8884", str(mtls))
    )


@pytest.fixture
def stack_broker(tmp_path: Path) -> Iterator[tuple[ProvisionedFleet, int, int]]:
    fleet = ProvisionedFleet(tmp_path / "fleet")
    tls, mtls = free_port(), free_port()
    conf_text = (REPO / "docker" / "mosquitto" / "mosquitto.conf").read_text()
    conf = tmp_path / "mosquitto.conf"
    local = localise(conf_text, fleet.broker_dir, tmp_path / "data", tls, mtls)
    conf.write_text(local + "\n".join(broker_user_lines()) + "\n")
    (tmp_path / "data").mkdir()
    with (tmp_path / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.05)
        yield fleet, tls, mtls
    finally:
        proc.terminate()
        proc.wait(5)


def test_broker_health_check_and_a_device_over_tls(
    stack_broker: tuple[ProvisionedFleet, int, int],
) -> None:
    fleet, tls, mtls = stack_broker
    test = COMPOSE["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    check = localise(test[1].replace("$$", "$"), fleet.broker_dir, Path("/unused"), tls, mtls)
    result = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mosquitto version")
    # A plain-TCP client gets nowhere: the stack has no plain listener.
    wrong = check.replace(f"--cafile {fleet.broker_dir}/ca.crt ", "")
    assert subprocess.run(["sh", "-c", wrong], capture_output=True, timeout=20).returncode != 0
    # The cloud identity publishes over TLS with its generated password.
    cloud = MqttLink(
        BrokerEndpoint(
            "localhost",
            tls,
            username="cloud",
            password=fleet.service_password("cloud"),
            ca_file=str(fleet.broker_dir / "ca.crt"),
        ),
        client_id="cloud",
    )
    cloud.start(timeout=5)
    try:
        assert cloud.publish("mlops/releases/catdog", b"{}", retain=False).wait(5)
    finally:
        cloud.stop()


def _psql(*sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
    args = ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres", "-d", database, "-At"]
    args += ["-v", "ON_ERROR_STOP=1"]
    for statement in sql:
        args += ["-c", statement]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def throwaway_database() -> Iterator[str]:
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"no PostgreSQL on {PG_HOST}:{PG_PORT} (the stack test needs one, trust auth)")
    name = f"mlflow_it_{uuid.uuid4().hex[:10]}"
    created = _psql(f"CREATE DATABASE {name}")
    if created.returncode != 0:
        pytest.skip(f"cannot create a database on {PG_HOST}:{PG_PORT}: {created.stderr.strip()}")
    yield name
    _psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        f"DROP DATABASE IF EXISTS {name}",
    )


@pytest.mark.slow
def test_mlflow_server_on_postgresql_with_the_compose_command(
    throwaway_database: str, tmp_path: Path
) -> None:
    command = COMPOSE["services"]["mlflow"]["command"][0]
    port = free_port()
    artefacts = tmp_path / "mlartifacts"
    local = (
        command.replace('PGPASSWORD="$$(cat /run/secrets/postgres_password)" exec ', "")
        .replace(
            "mlflow@postgres:5432/mlflow", f"postgres@{PG_HOST}:{PG_PORT}/{throwaway_database}"
        )
        .replace("/mlartifacts", str(artefacts))
        .replace("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {port}")
    )
    assert local.startswith("mlflow server ") and "--workers 1" in local
    argv = [str(Path(sys.executable).parent / "mlflow"), *local.split()[1:]]
    log_path = tmp_path / "mlflow.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "mlflow server not healthy in 120 s"
                time.sleep(0.5)
        code = (
            "import mlflow, sys\n"
            f"mlflow.set_tracking_uri({url!r})\n"
            "mlflow.set_experiment('stack-check')\n"
            "with mlflow.start_run() as run:\n"
            "    mlflow.log_metric('accuracy', 0.91)\n"
            "    mlflow.log_text('hello', 'notes/hello.txt')\n"
            "print(run.info.run_id)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        client = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
        assert client.returncode == 0, client.stderr[-2000:]
        # The run is in PostgreSQL and the artefact went through the server to its volume.
        rows = _psql("SELECT key, value FROM metrics", database=throwaway_database)
        assert rows.stdout.split() == ["accuracy|0.91"], rows.stdout + rows.stderr
        assert [p.name for p in artefacts.rglob("hello.txt")] == ["hello.txt"]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)
