"""What runs on a device is pinned by hash and described by an SBOM.

The device locks carry a sha256 for every file of every pinned version (scripts/lock.sh), the
device environments are installed from them with ``pip --require-hashes`` (scripts/bootstrap.sh,
docker/device/Dockerfile, scripts/check-arm64.sh), and scripts/test.sh writes a CycloneDX SBOM
of each environment it builds; these tests hold the three to each other.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

EDGE = ROOT / "edge-agent"
SHA256 = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]


def read_lock(path: Path) -> dict[str, Pin]:
    """A hashed lock's pins: ``name==version [; marker] \\`` and its ``--hash`` lines."""
    pins: dict[str, Pin] = {}
    blocks: list[list[str]] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            assert blocks, f"{path.name}: a continuation line before any pin: {line!r}"
            blocks[-1].append(line)
        else:
            blocks.append([line])
    for block in blocks:
        text = " ".join(part.rstrip(" \\") for part in block)
        spec = text.split(" --hash=")[0].strip()
        requirement = Requirement(spec)
        (specifier,) = list(requirement.specifier)
        assert specifier.operator == "==", f"{path.name}: {spec!r} is not an exact pin"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = Pin(name, specifier.version, requirement.marker, tuple(SHA256.findall(text)))
    return pins


def station_pins() -> dict[str, Pin]:
    return read_lock(EDGE / "requirements.lock")


def camera_pins() -> dict[str, Pin]:
    return read_lock(EDGE / "requirements-camera.lock")


def test_device_locks_pin_every_package_by_version_and_hash() -> None:
    station, camera = station_pins(), camera_pins()
    assert {"onnxruntime", "numpy", "paho-mqtt", "cryptography"} <= set(station)
    assert list(camera) == ["opencv-python-headless"]
    for pin in [*station.values(), *camera.values()]:
        assert pin.hashes, (
            f"{pin.name}=={pin.version} has no --hash: pip --require-hashes refuses it"
        )
        assert len(set(pin.hashes)) == len(pin.hashes)
    # A binary package has a wheel per platform, so one hash would serve one architecture only:
    # the locks are universal (x86_64 and aarch64 boards install from the same file).
    for name in ("onnxruntime", "numpy", "cryptography", "psutil", "pydantic-core"):
        assert len(station[name].hashes) >= 4, name
    assert len(camera["opencv-python-headless"].hashes) >= 4


def test_device_locks_satisfy_the_package_requirements() -> None:
    project = tomllib.loads((EDGE / "pyproject.toml").read_text())["project"]
    station, camera = station_pins(), camera_pins()
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for r in project["optional-dependencies"]["camera"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        pin = station.get(name) or camera.get(name)
        assert pin is not None, f"{name} is required by edge-agent but not locked"
        assert requirement.specifier.contains(Version(pin.version)), (name, pin.version)
    assert not set(station) & set(camera), "the camera lock repeats a station pin"


def _sbom(kind: str) -> dict:
    folder = os.environ.get("EDGE_MLOPS_SBOM_DIR")
    if not folder:
        pytest.skip("EDGE_MLOPS_SBOM_DIR not set (scripts/test.sh writes the SBOMs)")
    path = Path(folder) / f"edge-agent-{kind}.cdx.json"
    assert path.is_file(), f"scripts/test.sh wrote no SBOM at {path}"
    bom: dict = json.loads(path.read_text())
    return bom


def _installed(venv_variable: str) -> dict[str, str]:
    venv = os.environ.get(venv_variable)
    if not venv:
        pytest.skip(f"{venv_variable} not set (scripts/test.sh builds it)")
    probe = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(Path(venv) / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonicalize_name(k): v for k, v in json.loads(out).items()}


# What a venv holds besides the locked closure: its own installer (the device image removes
# pip before it writes its SBOM) and the package itself, the SBOM's root component.
VENV_TOOLING = {"pip", "setuptools"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("kind", "venv_variable"), [("camera", "EDGE_VENV"), ("station", "STATION_VENV")]
)
def test_sbom_describes_exactly_the_device_environment_the_locks_installed(
    kind: str, venv_variable: str
) -> None:
    bom = _sbom(kind)
    installed = _installed(venv_variable)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    project = tomllib.loads((EDGE / "pyproject.toml").read_text())["project"]
    root = bom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("edge-agent", project["version"])
    assert installed.pop("edge-agent") == project["version"]

    components = {canonicalize_name(c["name"]): c for c in bom["components"]}
    assert {n: c["version"] for n, c in components.items()} == installed
    for name, component in components.items():
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"

    locked = dict(station_pins())
    if kind == "camera":
        locked |= camera_pins()
    environment = {"platform_python_implementation": "CPython", "implementation_name": "cpython"}
    expected = {
        name: pin.version
        for name, pin in locked.items()
        if pin.marker is None or pin.marker.evaluate(environment)
    }
    shipped = {n: v for n, v in installed.items() if n not in VENV_TOOLING}
    assert shipped == expected, "the environment is not what its locks pin"
    assert ("opencv-python-headless" in shipped) == (kind == "camera")
