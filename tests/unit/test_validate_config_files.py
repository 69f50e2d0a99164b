"""``validate-config --check-files``: every missing file a config names, by file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "device-configs"
NOT_CHECKED = "files not checked; run with --check-files or `edge-agent doctor`"


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "validate-config", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_without_the_flag_ok_says_files_were_not_checked() -> None:
    done = _run(*map(str, sorted(EXAMPLES.glob("*.yaml"))))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith(f"); {NOT_CHECKED}") for line in lines)


def test_the_examples_report_each_missing_file_where_it_is_written() -> None:
    # The examples name device paths (/etc/edge-agent, /var/lib/edge-agent): on a machine
    # that is not a provisioned device they are missing, each reported at its own line.
    named = [
        ("park-cam-01.yaml:15", "model.path", "/var/lib/edge-agent/models/catdog.onnx"),
        ("sites/park.yaml:8", "broker.password_file", "/etc/edge-agent/mqtt-password"),
        ("sites/park.yaml:10", "broker.tls.ca_file", "/etc/edge-agent/ca.pem"),
        ("sites/park.yaml:18", "api.token_file", "/etc/edge-agent/api-token"),
        ("park-cam-01.yaml:18", "updates.fleet_public_key", "/etc/edge-agent/fleet-key.pem"),
    ]
    done = _run("--check-files", str(EXAMPLES / "park-cam-01.yaml"))
    expected = [
        f"{where} · {key} · '{path}' · no such file"
        for where, key, path in named
        if not Path(path).exists()
    ]
    got = [line.replace(f"{EXAMPLES}/", "") for line in done.stdout.splitlines()]
    assert done.returncode == (2 if expected else 0)
    assert got == expected if expected else got[0].endswith("; files checked")


def _device(tmp: Path, **override: object) -> Path:
    """A camera config whose every named file exists in ``tmp``; ``override`` replaces keys."""
    for name in ("catdog.onnx", "ca.pem", "device.pem", "device.key", "mqtt-pw", "fleet.pem"):
        (tmp / name).write_text("x")
    (tmp / "gate.avi").write_bytes(b"x")
    (tmp / "models").mkdir(exist_ok=True)
    config: dict[str, object] = {
        "device_id": "cam-09",
        "site": "park",
        "kind": "camera",
        "source": {"type": "camera", "uri": str(tmp / "gate.avi")},
        "model": {"path": str(tmp / "catdog.onnx")},
        "broker": {
            "password_file": str(tmp / "mqtt-pw"),
            "tls": {
                "ca_file": str(tmp / "ca.pem"),
                "cert_file": str(tmp / "device.pem"),
                "key_file": str(tmp / "device.key"),
            },
        },
        "updates": {"fleet_public_key": str(tmp / "fleet.pem"), "models_dir": str(tmp / "models")},
        **override,
    }
    path = tmp / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def _at(path: Path, fragment: str) -> str:
    """``file:line`` of the first line of ``path`` holding ``fragment``."""
    lines = path.read_text().splitlines()
    return f"{path}:{next(i for i, line in enumerate(lines, 1) if fragment in line)}"


def _issues(lines: list[str]) -> list[tuple[str, str, str]]:
    """(file:line, key path, message) of each issue line; the value column is shortened."""
    return [
        (where, key, message)
        for where, key, _value, message in (line.split(" · ") for line in lines)
    ]


def test_all_files_present_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _device(tmp_path)
    assert main(["validate-config", "--check-files", str(path)]) == 0
    assert _lines(capsys) == [f"{path}: ok (camera park/cam-09); files checked"]


def test_each_missing_file_is_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _device(tmp_path)
    (tmp_path / "catdog.onnx").unlink()
    (tmp_path / "device.key").unlink()
    (tmp_path / "ca.pem").unlink()
    (tmp_path / "ca.pem").mkdir()
    assert main(["validate-config", "--check-files", str(path)]) == 2
    assert _issues(_lines(capsys)) == [
        (_at(path, "catdog.onnx"), "model.path", "no such file"),
        (_at(path, "ca_file:"), "broker.tls.ca_file", "a directory, not a file"),
        (_at(path, "key_file:"), "broker.tls.key_file", "no such file"),
    ]
    # Without the flag the same config is valid: the models are satisfied, files unchecked.
    assert main(["validate-config", str(path)]) == 0
    assert _lines(capsys) == [f"{path}: ok (camera park/cam-09); {NOT_CHECKED}"]


@pytest.mark.parametrize("uri", ["rtsp://user:pw@cam.local/stream1", 0, "http://cam/mjpg"])
def test_stream_urls_and_device_indexes_are_not_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uri: object
) -> None:
    path = _device(tmp_path, source={"type": "camera", "uri": uri})
    assert main(["validate-config", "--check-files", str(path)]) == 0, _lines(capsys)


def test_relative_paths_resolve_against_the_working_directory(tmp_path: Path) -> None:
    path = _device(tmp_path, source={"type": "camera", "uri": "videos/gate.avi"})
    done = _run("--check-files", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        f"{_at(path, 'uri:')} · source.uri · 'videos/gate.avi' · no such file "
        f"(looked for {tmp_path}/videos/gate.avi)"
    ]
    (tmp_path / "videos").mkdir()
    os.link(tmp_path / "gate.avi", tmp_path / "videos" / "gate.avi")
    assert _run("--check-files", str(path), cwd=tmp_path).returncode == 0


def test_station_sources_csv_and_serial_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _device(tmp_path, kind="weather", source={"type": "csv_replay", "path": "no.csv"})
    assert main(["validate-config", "--check-files", str(csv)]) == 2
    assert _issues(_lines(capsys)) == [
        (_at(csv, "no.csv"), "source.path", f"no such file (looked for {Path.cwd()}/no.csv)")
    ]
    serial = _device(tmp_path, kind="weather", source={"type": "serial", "device": "/dev/ttyNOPE9"})
    assert main(["validate-config", "--check-files", str(serial)]) == 2
    assert _lines(capsys) == [
        f"{_at(serial, 'ttyNOPE9')} · source.device · '/dev/ttyNOPE9' · no such device"
    ]


def test_models_dir_is_needed_only_without_a_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    updates = {"fleet_public_key": str(tmp_path / "fleet.pem"), "models_dir": "gone"}
    with_model = _device(tmp_path, updates=updates)
    assert main(["validate-config", "--check-files", str(with_model)]) == 0
    capsys.readouterr()
    without = _device(tmp_path, updates=updates, model={"name": "catdog"})
    assert main(["validate-config", "--check-files", str(without)]) == 2
    assert "updates.models_dir · 'gone' · no such directory" in _lines(capsys)[0]
