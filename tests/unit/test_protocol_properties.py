"""Property tests: round trips, arbitrary bytes, and signatures broken by any field change."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.protocol import (
    MessageBase,
    ProtocolError,
    ReleaseManifest,
    SignatureError,
    SigningKey,
    decode_manifest,
    decode_message,
    encode,
    safe_decode,
    verify_manifest,
)
from tests.support.samples import manifests, message_strategies

KEY = SigningKey.generate()


@pytest.mark.parametrize("kind", sorted(message_strategies))
def test_every_message_type_round_trips(kind: str) -> None:
    @given(message_strategies[kind])
    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
    def check(message: MessageBase) -> None:
        assert decode_message(encode(message)) == message

    check()


@given(manifests)
@settings(max_examples=60)
def test_manifest_round_trips_and_verifies(manifest: ReleaseManifest) -> None:
    signed = KEY.sign(manifest)
    received = decode_manifest(encode(signed))
    assert received == signed
    verify_manifest(received, KEY.public_key)


@given(st.binary(max_size=2048))
@settings(max_examples=400)
def test_any_bytes_parse_or_are_cleanly_rejected(payload: bytes) -> None:
    result = safe_decode(payload)
    assert isinstance(result, ProtocolError | MessageBase)
    try:
        decode_message(payload)
    except ProtocolError as e:
        assert str(e)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.sampled_from(sorted(message_strategies)),
    st.dictionaries(st.text(max_size=12), json_values, max_size=8),
)
@settings(max_examples=300)
def test_any_json_object_with_a_type_is_parsed_or_rejected(kind: str, extra: dict) -> None:
    payload = json.dumps({"schema_version": 1, "type": kind, **extra}).encode()
    result = safe_decode(payload)
    assert isinstance(result, ProtocolError | MessageBase)


def _mutations(data: dict) -> list[tuple[str, object]]:
    """One changed value for every leaf field of a manifest's JSON form."""
    out: list[tuple[str, object]] = []
    for key, value in data.items():
        if key in ("signature", "key_id", "schema_version", "type"):
            continue
        if isinstance(value, bool):
            out.append((key, not value))
        elif isinstance(value, int):
            out.append((key, value + 1))
        elif isinstance(value, float):
            out.append((key, value / 2 if value else 1.0))
        elif isinstance(value, str):
            out.append((key, value[:-1] + ("1" if value.endswith("0") else "0")))
        elif isinstance(value, list):
            out.append((key, [*value, value[-1]] if value else ["extra"]))
        elif isinstance(value, dict):
            for sub, sub_value in _mutations(value):
                out.append((key, {**value, sub: sub_value}))
    return out


@given(manifests)
@settings(max_examples=40)
def test_signature_fails_after_any_single_field_change(manifest: ReleaseManifest) -> None:
    signed = KEY.sign(manifest)
    data = json.loads(encode(signed))
    mutations = _mutations(data)
    assert len(mutations) >= 14
    for key, value in mutations:
        changed = {**data, key: value}
        try:
            tampered = decode_manifest(json.dumps(changed).encode())
        except ProtocolError:
            continue  # the change made the manifest invalid: refused anyway
        assert tampered != signed
        with pytest.raises(SignatureError):
            verify_manifest(tampered, KEY.public_key)
