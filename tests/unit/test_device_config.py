"""Device YAML: every example validates; errors name file, line, key path and hide secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config.loader import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEVICE_FILES = sorted((ROOT / "device-configs").glob("*.yaml"))


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_every_example_device_config_is_valid(path: Path):
    config = load_config(path)
    assert config.device_id == path.stem


def test_examples_cover_a_camera_and_a_weather_station():
    kinds = {load_config(p).kind.value for p in DEVICE_FILES}
    assert kinds == {"camera", "weather"}


def test_site_defaults_merge_and_device_overrides(tmp_path: Path):
    (tmp_path / "site.yaml").write_text(
        "site: park\nkind: camera\nbroker:\n  host: site-broker\n  port: 8883\n"
        "limits:\n  telemetry_interval_s: 30\n"
    )
    (tmp_path / "cam-02.yaml").write_text(
        "extends: site.yaml\ndevice_id: cam-02\nsource:\n  type: camera\n  uri: 0\n"
        "model:\n  path: m.onnx\nbroker:\n  port: 1884\n"
    )
    config = load_config(tmp_path / "cam-02.yaml")
    assert config.broker.host == "site-broker" and config.broker.port == 1884
    assert config.limits.telemetry_interval_s == 30


BAD = """\
device_id: cam-03
site: park
kind: camera
source:
  type: camera
  uri: rtsp://admin:hunter2@cam/stream
  fsp: 5
model:
  path: m.onnx
broker:
  password: hunter2
limits:
  outbox_budget_mb: -1
"""


def test_errors_carry_line_path_suggestion_and_mask_secrets(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = [str(i) for i in info.value.issues]
    text = "\n".join(lines)
    assert f"{path}:7 · source.fsp · 5 · unknown key; did you mean 'fps'?" in lines
    assert any(line.startswith(f"{path}:13 · limits.outbox_budget_mb · -1 ·") for line in lines)
    assert f"{path}:10 · broker" in text and "password_env" in text
    assert "hunter2" not in text


def test_a_password_with_an_at_sign_is_masked_whole(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.replace("  fsp: 5\n", "  url: rtsp://admin:hun@ter2@cam/stream\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(str(i) for i in info.value.issues)
    assert "source.url · 'rtsp://admin:***@cam/stream' · unknown key" in text
    assert "ter2" not in text and "hunter2" not in text


def test_errors_in_site_file_point_at_the_site_file(tmp_path: Path):
    (tmp_path / "site.yaml").write_text("site: park\nkind: camera\napi:\n  prot: 9000\n")
    (tmp_path / "dev.yaml").write_text(
        "extends: site.yaml\ndevice_id: d1\nsource: {type: camera, uri: 0}\nmodel: {path: m}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "dev.yaml")
    (issue,) = info.value.issues
    assert issue.file == str((tmp_path / "site.yaml").resolve()) and issue.line == 4
    assert "did you mean 'port'?" in issue.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("device_id: [\n", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("device_id: a\ndevice_id: b\n", "duplicate key"),
        ("extends: nowhere.yaml\n", "no such file"),
    ],
)
def test_broken_files_are_one_clear_line(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)


def test_validate_config_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate-config", *map(str, DEVICE_FILES)]) == 0
    assert main(["validate-config", str(DEVICE_FILES[0]), str(bad)]) == 2
    out = capsys.readouterr().out
    assert "ok (camera park/park-cam-01)" in out and "did you mean 'fps'?" in out
    assert "hunter2" not in out


def test_docs_carry_the_current_config_reference():
    from edge_agent.config.reference import config_reference

    docs = (ROOT / "docs" / "edge-agent.md").read_text()
    assert config_reference() in docs, "regenerate: edge-agent config-reference"


def test_extends_path_with_a_nul_byte_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text('extends: "site\\0.yaml"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "cannot hold a NUL byte" in str(info.value.issues[0])


def test_visits_block_defaults_and_upload_needs_the_capture_uploader(tmp_path: Path):
    camera = load_config(ROOT / "device-configs" / "park-cam-01.yaml")
    assert (camera.visits.predictions, camera.visits.quiet_s) == ("pets_only", 10)
    station = load_config(ROOT / "device-configs" / "port-ws-01.yaml")
    assert station.visits.predictions == "auto"  # every forecast published, as before
    base = (
        "device_id: cam-04\nsite: park\nkind: camera\nsource:\n  type: camera\n  uri: 0\n"
        "model:\n  path: m.onnx\nvisits:\n  upload: true\n"
    )
    (tmp_path / "cam-04.yaml").write_text(base)
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "cam-04.yaml")
    assert "enable drift.capture and set its upload_url" in str(refused.value.issues[0])
    (tmp_path / "cam-04.yaml").write_text(
        base + "drift:\n  capture:\n    enabled: true\n    upload_url: https://fleet/api/samples\n"
    )
    assert load_config(tmp_path / "cam-04.yaml").visits.upload is True
