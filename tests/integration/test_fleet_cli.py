"""``cloud-trainer fleet serve`` as an operator runs it: a real process, a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_trainer", "fleet", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_serve_answers_and_stops_cleanly_on_sigterm(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    proc = _serve(
        "--db",
        f"sqlite:///{tmp_path / 'fleet.db'}",
        "--broker",
        f"{mosquitto.host}:{mosquitto.port}",
        "--port",
        "0",
        "--samples-dir",
        str(tmp_path / "samples"),
        # A root of its own: the session broker holds other tests' retained messages.
        "--root",
        "fleetcli",
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline().strip()
        token_line = proc.stdout.readline().strip()
        assert banner.startswith("fleet service at http://127.0.0.1:"), banner
        url = banner.split()[3]
        token = token_line.rsplit(" ", 1)[-1]
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        body = {"device_id": "cam-01", "site": "park"}
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{url}/api/devices", json=body, headers=headers).status_code == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    proc = _serve("--db", "mysql://localhost/fleet", "--port", "0")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: unsupported database 'mysql'")
    tokens = tmp_path / "tokens"
    tokens.write_text("operator=short\n")
    proc = _serve("--db", f"sqlite:///{tmp_path / 'f.db'}", "--tokens-file", str(tokens))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "at least 16 characters" in err
