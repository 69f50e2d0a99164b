"""Ed25519 manifest signatures: sign, verify, refuse unsigned, unknown and tampered releases."""

import base64
from pathlib import Path

import pytest

from edge_agent.protocol import (
    SignatureError,
    SigningKey,
    decode_manifest,
    encode,
    load_public_key,
    rollout_bucket,
    verify_manifest,
)
from tests.support.samples import sample_manifest


def test_sign_and_verify_after_the_wire(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    assert (tmp_path / "fleet.key").stat().st_mode & 0o777 == 0o600
    signed = SigningKey.load(tmp_path / "fleet.key").sign(sample_manifest())
    received = decode_manifest(encode(signed))
    verify_manifest(received, load_public_key(tmp_path / "fleet.pub"))
    verify_manifest(received, {key.key_id: key.public_key})


def test_unsigned_refused() -> None:
    with pytest.raises(SignatureError, match="is not signed"):
        verify_manifest(sample_manifest(), SigningKey.generate().public_key)


def test_other_key_refused() -> None:
    signed = SigningKey.generate().sign(sample_manifest())
    with pytest.raises(SignatureError, match="unknown key"):
        verify_manifest(signed, SigningKey.generate().public_key)


def test_same_key_id_wrong_signature_refused() -> None:
    key = SigningKey.generate()
    signed = key.sign(sample_manifest())
    forged = signed.model_copy(update={"signature": base64.b64encode(b"\0" * 64).decode()})
    with pytest.raises(SignatureError, match="does not match"):
        verify_manifest(forged, key.public_key)
    garbage = signed.model_copy(update={"signature": "not base64!"})
    with pytest.raises(SignatureError, match="not base64"):
        verify_manifest(garbage, key.public_key)


def test_rollout_targets_pinned_groups_and_share() -> None:
    manifest = sample_manifest()
    assert manifest.targets("cam-07", set())
    assert manifest.targets("anything", {"canary"})
    inside = [d for d in (f"cam-{i:03d}" for i in range(2000)) if manifest.targets(d, set())]
    assert 140 < len(inside) < 260  # about 10 % of 2000
    assert all(rollout_bucket(d, "catdog") < 10 for d in inside)
