"""``cloud-trainer device|broker``: state transitions, bundle contents, errors and exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from cloud_trainer.cli import main
from cloud_trainer.provision.mosquitto_passwd import MosquittoPasswordFile
from edge_agent.config.loader import load_config
from edge_agent.protocol import SigningKey


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    SigningKey.generate().save(tmp_path / "fleet.key", state / "fleet-public.pem")
    assert main(["broker", "init", "--state-dir", str(state), "--hostname", "mqtt.example"]) == 0
    return state


def provision(state: Path, out: Path, *extra: str, site: str = "park", device: str = "cam-01"):
    args = ["device", "provision", "--state-dir", str(state), "--site", site]
    args += ["--device", device, "--kind", "camera", "--out", str(out), *extra]
    return main(args)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_provision_writes_bundle_with_secrets_by_reference(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert (
        provision(state, out, "--groups", "canary", "north", "--broker-host", "mqtt.example") == 0
    )
    password = (out / "mqtt-password").read_text().strip()
    config_text = (out / "device.yaml").read_text()
    assert password not in config_text
    config = yaml.safe_load(config_text)
    assert config["broker"] == {
        "host": "mqtt.example",
        "topic_root": "mlops",
        "port": 8883,
        "username": "park.cam-01",
        "password_file": "/data/edge-agent/mqtt-password",
        "tls": {"ca_file": "/data/edge-agent/ca.crt"},
    }
    assert (config["device_id"], config["site"], config["kind"]) == ("cam-01", "park", "camera")
    assert config["groups"] == ["canary", "north"]
    assert mode(out / "mqtt-password") == 0o600
    assert (out / "fleet-public.pem").read_bytes() == (state / "fleet-public.pem").read_bytes()
    assert (out / "ca.crt").read_bytes() == (state / "pki" / "ca.crt").read_bytes()
    passwd = MosquittoPasswordFile.load(state / "broker" / "passwd")
    assert passwd.check("park.cam-01", password)
    acl = (state / "broker" / "acl").read_text()
    assert "user park.cam-01\ntopic write mlops/park/cam-01/status\n" in acl
    assert "topic write mlops/park/cam-01/cmd\n" not in acl
    assert mode(state / "pki" / "ca.key") == 0o600


def test_server_certificate_names_the_requested_hosts(state: Path) -> None:
    cert = x509.load_pem_x509_certificate((state / "broker" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"mqtt.example", "localhost", "mosquitto"} <= set(san.get_values_for_type(x509.DNSName))


def test_certificate_auth_issues_a_client_cert_with_the_username_as_cn(
    state: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    assert provision(state, out, "--auth", "certificate") == 0
    cert = x509.load_pem_x509_certificate((out / "client.crt").read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "park.cam-01"
    assert mode(out / "client.key") == 0o600
    assert not (out / "mqtt-password").exists()
    config = yaml.safe_load((out / "device.yaml").read_text())
    assert config["broker"]["port"] == 8884 and "username" not in config["broker"]
    assert config["broker"]["tls"]["key_file"] == "/data/edge-agent/client.key"
    assert "park.cam-01" not in MosquittoPasswordFile.load(state / "broker" / "passwd").entries


def test_rotate_replaces_the_secret_and_revoke_removes_it(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert provision(state, out) == 0
    first = (out / "mqtt-password").read_text().strip()
    args = ["--state-dir", str(state), "--site", "park", "--device", "cam-01"]
    assert main(["device", "rotate", *args, "--out", str(out)]) == 0
    second = (out / "mqtt-password").read_text().strip()
    passwd = MosquittoPasswordFile.load(state / "broker" / "passwd")
    assert first != second and passwd.check("park.cam-01", second)
    assert not passwd.check("park.cam-01", first)
    assert main(["device", "revoke", *args]) == 0
    assert "park.cam-01" not in MosquittoPasswordFile.load(state / "broker" / "passwd").entries
    assert "park.cam-01" not in (state / "broker" / "acl").read_text()
    # Revoked devices can be provisioned again, as a new generation.
    assert provision(state, out) == 0
    record = json.loads((state / "registry.json").read_text())["identities"]["park.cam-01"]
    assert record["generation"] == 3 and record["revoked"] is None


def test_rotating_a_certificate_puts_the_old_serial_in_the_crl(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert provision(state, out, "--auth", "certificate") == 0
    old = x509.load_pem_x509_certificate((out / "client.crt").read_bytes()).serial_number
    args = ["--state-dir", str(state), "--site", "park", "--device", "cam-01", "--out", str(out)]
    assert main(["device", "rotate", *args]) == 0
    new = x509.load_pem_x509_certificate((out / "client.crt").read_bytes()).serial_number
    crl = x509.load_pem_x509_crl((state / "broker" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old) is not None
    assert crl.get_revoked_certificate_by_serial_number(new) is None


def test_list_shows_services_and_devices(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision(state, tmp_path / "b") == 0
    capsys.readouterr()
    assert main(["device", "list", "--state-dir", str(state), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["username"], r["role"]) for r in rows} == {
        ("cloud", "cloud"),
        ("fleet", "fleet"),
        ("health", "health"),
        ("park.cam-01", "device"),
    }


@pytest.mark.parametrize(
    ("extra", "site", "code", "message"),
    [
        ((), "Park", 2, "invalid site id 'Park'"),
        ((), "releases", 2, "site id 'releases' is reserved"),
        (("--fleet-public-key", "/nonexistent.pem"), "park", 2, "cannot read the fleet public"),
        (("--fleet-url", "ftp://fleet"), "park", 2, "invalid fleet URL"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(
    state: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    site: str,
    code: int,
    message: str,
) -> None:
    capsys.readouterr()
    assert provision(state, tmp_path / "b", *extra, site=site) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "b").exists()


def test_conflicts_exit_1_and_change_nothing(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision(state, tmp_path / "b") == 0
    before = {p.name: p.read_bytes() for p in (state / "broker").iterdir()}
    capsys.readouterr()
    assert provision(state, tmp_path / "b2") == 1
    assert "already provisioned" in capsys.readouterr().err
    args = ["--state-dir", str(state), "--site", "park", "--device", "nope"]
    assert main(["device", "revoke", *args]) == 1
    assert "is not provisioned" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (state / "broker").iterdir()} == before


def test_device_before_broker_init_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "empty"
    SigningKey.generate().save(tmp_path / "k", state / "fleet-public.pem")
    assert provision(state, tmp_path / "b") == 1
    assert "run `cloud-trainer broker init` first" in capsys.readouterr().err


def test_a_not_ed25519_fleet_key_is_refused(state: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes((state / "pki" / "ca.crt").read_bytes())
    assert provision(state, tmp_path / "b", "--fleet-public-key", str(bad)) == 2


def test_corrupt_registry_is_reported_not_overwritten(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = state / "registry.json"
    registry.write_text('{"schema_version": 1, "identities": {"x": {"role": "wizard"}}}')
    capsys.readouterr()
    assert provision(state, tmp_path / "b") == 2
    assert "registry" in capsys.readouterr().err
    assert "wizard" in registry.read_text()


def test_unwritable_bundle_folder_fails_cleanly_and_keeps_the_state(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    before = (state / "registry.json").read_bytes()
    assert provision(state, blocker / "bundle") == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert (state / "registry.json").read_bytes() == before
    assert "park.cam-01" not in MosquittoPasswordFile.load(state / "broker" / "passwd").entries


def test_broker_conf_has_no_plain_listener(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["broker", "conf"]) == 0
    conf = capsys.readouterr().out
    listeners = [line for line in conf.splitlines() if line.startswith("listener")]
    assert listeners == ["listener 8883", "listener 8884"]
    assert "allow_anonymous false" in conf and "require_certificate true" in conf


def test_bundle_config_passes_the_agents_own_validation(state: Path, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "device-configs" / "park-cam-01.yaml"
    out = tmp_path / "bundle"
    assert provision(state, out, "--base-config", str(example)) == 0
    config = load_config(out / "device.yaml")
    assert (config.site, config.device_id) == ("park", "cam-01")
    assert config.broker.username == "park.cam-01"
    assert config.broker.tls is not None and config.broker.password_file is not None
    # The example's camera source is kept; its credentials are replaced by the issued ones.
    assert config.source.type == "camera"
    assert config.updates is not None
    assert str(config.updates.fleet_public_key) == "/data/edge-agent/fleet-public.pem"


def test_a_base_config_the_agent_rejects_stops_provisioning(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("source:\n  type: camera\n  uri: 0\n  fps: -1\n")
    capsys.readouterr()
    assert provision(state, tmp_path / "b", "--base-config", str(bad)) == 2
    err = capsys.readouterr().err
    assert "fps" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
