"""balena-cli wrappers: the exact commands built, secrets masked, and a clear missing-tool error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cloud_trainer.balena import commands as cmd
from cloud_trainer.balena.commands import BalenaArgumentError
from cloud_trainer.cli import main
from edge_agent.protocol import SigningKey

REPO = Path(__file__).resolve().parents[2]
BALENA = shutil.which("balena")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    SigningKey.generate().save(tmp_path / "fleet.key", state / "fleet-public.pem")
    assert main(["broker", "init", "--state-dir", str(state)]) == 0
    out = tmp_path / "bundle"
    args = ["device", "provision", "--state-dir", str(state), "--site", "park"]
    assert main([*args, "--device", "cam-01", "--kind", "camera", "--out", str(out)]) == 0
    return out


def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    capsys.readouterr()
    assert main(["balena", *argv, "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def test_fleet_create_tag_flash_and_push(capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run(capsys, "fleet-create", "edge-cams", "--type", "raspberrypi4-64") == [
        "balena fleet create edge-cams --type raspberrypi4-64"
    ]
    assert dry_run(capsys, "tag", "site", "park", "--device", "7cf02a6") == [
        "balena tag set site park --device 7cf02a6"
    ]
    assert dry_run(capsys, "local-flash", "os.img", "--drive", "/dev/sdb", "--yes") == [
        "balena local flash os.img --drive /dev/sdb --yes"
    ]
    source = REPO / "docker" / "balena"
    assert dry_run(
        capsys, "push", "myorg/edge-cams", "--source", str(source), "--release-tag", "v", "0.1"
    ) == [f"balena push myorg/edge-cams --source {source} --release-tag v 0.1"]


def test_os_configure_names_the_device_after_its_bundle(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALENA_WIFI_KEY", "hunter22")
    lines = dry_run(
        capsys,
        "os-configure", "rpi.img", "--fleet", "myorg/edge-cams", "--version", "6.0.13",
        "--bundle", str(bundle), "--network", "wifi", "--wifi-ssid", "site wifi",
    )  # fmt: skip
    assert lines == [
        "balena os configure rpi.img --fleet myorg/edge-cams --version 6.0.13 "
        "--config-network wifi --initial-device-name park-cam-01 "
        "--config-wifi-ssid 'site wifi' --config-wifi-key '********'"
    ]


def test_bundle_becomes_device_variables_with_secrets_masked(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = "\n".join(dry_run(capsys, "env-set", "--bundle", str(bundle), "--device", "7cf02a6"))
    password = (bundle / "mqtt-password").read_text().strip()
    # PEM and YAML values span lines inside their quotes: one command per variable.
    names = [part.split()[0] for part in output.split("balena env add ")[1:]]
    assert names == [
        "EDGE_CONFIG_YAML",
        "EDGE_CA_PEM",
        "EDGE_FLEET_PUBLIC_KEY_PEM",
        "EDGE_MQTT_PASSWORD",
    ]
    assert output.count("--device 7cf02a6 --service edge-agent") == 4
    assert password not in output
    lines = output.splitlines()
    masked = [line for line in lines if "EDGE_MQTT_PASSWORD" in line]
    assert masked == [
        "balena env add EDGE_MQTT_PASSWORD '********' --device 7cf02a6 --service edge-agent"
    ]
    commands = cmd.env_from_bundle(bundle, "7cf02a6")
    real = {c.argv[3]: c.argv[4] for c in commands}
    assert real["EDGE_MQTT_PASSWORD"].strip() == password


def test_env_set_single_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run(capsys, "env-set", "EDGE_AGENT_LOG_LEVEL", "DEBUG", "--fleet", "cams") == [
        "balena env add EDGE_AGENT_LOG_LEVEL DEBUG --fleet cams"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fleet-create", "bad name!", "--type", "x"], "invalid fleet"),
        (["env-set", "1BAD", "v", "--fleet", "cams"], "invalid variable name"),
        (["env-set", "NAME", "v", "--fleet", "cams", "--device", "7cf02a6"], "exactly one"),
        (["tag", "k", "v", "--device", "NOT-A-UUID"], "invalid device UUID"),
        (["local-flash", "os.img", "--drive", "sdb"], "invalid drive"),
        (["os-configure", "i.img", "--fleet", "f", "--version", "6", "--network", "wifi"], "ssid"),
        (["push", "cams", "--source", "/nonexistent"], "has no docker-compose.yml"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    capsys.readouterr()
    assert main(["balena", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.skipif(BALENA is not None, reason="balena-cli is installed here")
def test_without_balena_cli_it_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capsys.readouterr()
    assert main(["balena", "fleet-create", "cams", "--type", "raspberrypi4-64"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: balena-cli is not installed (https://github.com/balena-io/balena-cli); "
        "--dry-run prints the command instead"
    )


def test_masking_covers_every_secret_shaped_name() -> None:
    for name in ("EDGE_MQTT_PASSWORD", "API_TOKEN", "EDGE_CLIENT_PRIVATE_KEY_PEM", "X_SECRET"):
        assert "s3" not in cmd.env_set(name, "s3", fleet="f").display()
    assert "INFO" in cmd.env_set("LOG_LEVEL", "INFO", fleet="f").display()
    with pytest.raises(BalenaArgumentError):
        cmd.env_set("BALENA_HOST_CONFIG_gpu_mem", "64", fleet="f", service="edge-agent")


BUILT = [
    cmd.fleet_create("cams", "raspberrypi4-64", "myorg"),
    cmd.env_set("NAME", "v", fleet="cams", service="edge-agent"),
    cmd.os_configure(Path("i.img"), "cams", "6.0.13", "park-cam-01", "raspberrypi4-64"),
    cmd.local_flash(Path("i.img"), "/dev/sdb", yes=True),
    cmd.push("cams", Path("docker/balena"), {"v": "1"}, "note", draft=True),
    cmd.tag_set("site", "park", device="7cf02a6"),
]


@pytest.mark.skipif(BALENA is None, reason="balena-cli not installed: flags checked where it is")
@pytest.mark.parametrize("command", BUILT, ids=lambda c: " ".join(c.argv[1:3]))
def test_flags_exist_in_the_installed_balena_cli(command: cmd.BalenaCommand) -> None:
    words = [a for a in command.argv[1:] if not a.startswith("-")]
    verb = words[:2] if command.argv[1] in ("fleet", "env", "os", "local", "tag") else words[:1]
    assert BALENA is not None
    helptext = subprocess.run(
        [BALENA, *verb, "--help"], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    for flag in (a for a in command.argv if a.startswith("--")):
        assert flag in helptext, f"{flag} not in `balena {' '.join(verb)} --help`"
