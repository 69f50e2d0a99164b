"""Decoding: every bad payload is rejected with an error that names the problem."""

import json

import pytest

from edge_agent.protocol import (
    MAX_PAYLOAD_BYTES,
    PredictionMessage,
    ProtocolError,
    TelemetryMessage,
    canonical_json,
    decode_manifest,
    decode_message,
    encode,
    safe_decode,
)
from tests.support.samples import T0, sample_manifest, sample_messages


def _valid() -> dict[str, object]:
    return json.loads(encode(sample_messages()[1]))


def test_every_sample_round_trips() -> None:
    for message in sample_messages():
        assert decode_message(encode(message)) == message


def test_encoding_is_canonical() -> None:
    msg = sample_messages()[2]
    raw = encode(msg)
    assert raw == canonical_json(json.loads(raw))
    assert b" " not in raw.replace(b'" "', b"")
    assert json.loads(raw)["ts"] == "2026-11-28T12:00:00Z"


def test_timestamps_normalised_to_utc() -> None:
    data = _valid()
    data["ts"] = "2026-11-28T14:00:00+02:00"
    msg = decode_message(json.dumps(data).encode())
    assert msg.ts == T0 and msg.ts.utcoffset() is not None
    assert json.loads(encode(msg))["ts"] == "2026-11-28T12:00:00Z"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "empty payload"),
        (b'{"schema_version": 1, "type": "telemetry"', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8: invalid byte 0xff at offset 0"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"text"', "must be a JSON object, got str"),
        (b'{"type": "status"}', "missing schema_version"),
        (b'{"schema_version": "1", "type": "status"}', "schema_version must be an integer"),
        (b'{"schema_version": true, "type": "status"}', "schema_version must be an integer"),
        (b'{"schema_version": 7, "type": "status"}', "unsupported schema_version 7"),
        (b'{"schema_version": 1}', "missing message type"),
        (b'{"schema_version": 1, "type": "selfie"}', "unknown message type 'selfie'"),
        (b'{"schema_version": 1, "type": "telemetry", "cpu_percent": NaN}', "NaN"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON"),
    ],
)
def test_bad_payloads_named(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_message(payload)
    result = safe_decode(payload)
    assert isinstance(result, ProtocolError)


def test_oversized_payload_refused_before_parsing() -> None:
    payload = b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    with pytest.raises(ProtocolError, match=f"exceeds the limit of {MAX_PAYLOAD_BYTES} bytes"):
        decode_message(payload)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("cpu_percent", "abc", "cpu_percent: Input should be a valid number"),
        ("cpu_percent", 150, "cpu_percent: Input should be less than or equal to 100"),
        ("seq", -1, "seq: Input should be greater than or equal to 0"),
        ("device_id", "dev/../x", "device_id: String should match pattern"),
        ("ts", "yesterday", "ts: Input should be a valid datetime"),
        ("ts", "2026-11-28T12:00:00", "ts: Input should have timezone info"),
        ("rss_bytes", None, "rss_bytes"),
        ("surprise", 1, "surprise: Extra inputs are not permitted"),
    ],
)
def test_wrong_types_and_values_named(field: str, value: object, problem: str) -> None:
    data = _valid()
    data[field] = value
    with pytest.raises(ProtocolError, match="invalid telemetry message: .*" + problem):
        decode_message(json.dumps(data).encode())


def test_missing_field_named() -> None:
    data = _valid()
    del data["uptime_s"]
    with pytest.raises(ProtocolError, match="uptime_s: Field required"):
        decode_message(json.dumps(data).encode())


def test_inf_float_rejected() -> None:
    data = _valid()
    raw = json.dumps(data).encode().replace(b'"cpu_percent":31.5', b'"cpu_percent":1e999')
    raw = raw.replace(b'"cpu_percent": 31.5', b'"cpu_percent": 1e999')
    with pytest.raises(ProtocolError, match="cpu_percent"):
        decode_message(raw)


def test_prediction_confidence_must_be_probability() -> None:
    msg = sample_messages()[2]
    assert isinstance(msg, PredictionMessage)
    data = json.loads(encode(msg))
    data["confidence"] = 1.5
    with pytest.raises(ProtocolError, match="confidence"):
        decode_message(json.dumps(data).encode())


def test_manifest_decodes_and_rejects() -> None:
    manifest = sample_manifest()
    assert decode_manifest(encode(manifest)) == manifest
    data = json.loads(encode(manifest))
    data["urls"] = ["file:///etc/passwd"]
    with pytest.raises(ProtocolError, match="download URL must be http"):
        decode_manifest(json.dumps(data).encode())
    data = json.loads(encode(manifest))
    data["sha256"] = "xyz"
    with pytest.raises(ProtocolError, match="sha256"):
        decode_manifest(json.dumps(data).encode())


def test_telemetry_type_is_telemetry() -> None:
    assert isinstance(decode_message(encode(sample_messages()[1])), TelemetryMessage)
