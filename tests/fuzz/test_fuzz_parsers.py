"""Hypothesis against every payload parser: a value comes back or the parser's own error type,
never anything else (an uncaught OverflowError kills a source worker as surely as a bug)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.config.loader import ConfigError, load_config
from edge_agent.features.weather import READING_FIELDS
from edge_agent.protocol import ProtocolError, decode_manifest, decode_message
from edge_agent.protocol.bundle import SPEC_METADATA_KEY, ModelSpec
from edge_agent.sources.mqtt_sensor import MqttSensorSource, MqttSensorSourceConfig
from edge_agent.sources.serial_line import parse_line
from edge_agent.sources.station import ReadingRejected, StationReading, reading_from_mapping

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

# JSON-ish leaves that stress converters: huge integers, extreme floats, odd text.
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e308, 1e20, -1e15, 2**63, "", " ", "nan", "inf", "1e999"]),
    st.text(max_size=40),
    st.sampled_from(
        ["2024-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
         "2024-13-01T00:00:00Z", "2024-01-01T00:00:00", "1700000000"]
    ),
)  # fmt: skip
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


message_like = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, 1, 2, "1", None]),
        "type": st.sampled_from(["status", "telemetry", "prediction", "drift", "event", "cmd",
                                 "cmd_ack", "release", "nope"]),
        "device_id": st.sampled_from(["cam-01", "", "CAM", "a/b", "#", "x" * 70]),
        "seq": leaves,
        "ts": leaves,
    },
    optional={"label": leaves, "confidence": leaves, "scores": json_values,
              "version": leaves, "urls": json_values, "sha256": leaves, "size": leaves},
)  # fmt: skip


@FUZZ
@given(st.one_of(message_like.map(_dump), json_values.map(_dump), st.binary(max_size=300)))
def test_wire_messages_parse_or_raise_protocol_error(payload: bytes) -> None:
    for parse in (decode_message, decode_manifest):
        try:
            parse(payload)
        except ProtocolError as e:
            assert str(e)


spec_like = st.fixed_dictionaries(
    {"name": leaves, "task": st.sampled_from(["image_classification", "tabular_classification", 3]),
     "labels": json_values, "inputs": json_values, "outputs": json_values,
     "probabilities_output": leaves, "preprocessing": json_values},
    optional={"drift": json_values, "decision_threshold": leaves, "horizon_s": leaves},
)  # fmt: skip


@FUZZ
@given(st.one_of(spec_like.map(_dump), json_values.map(_dump), st.text(max_size=200)))
def test_model_spec_metadata_parses_or_raises_protocol_error(raw: bytes | str) -> None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        spec = ModelSpec.from_metadata({SPEC_METADATA_KEY: text})
    except ProtocolError as e:
        assert str(e)
    else:
        assert ModelSpec.from_metadata(spec.to_metadata()) == spec


config_like = st.fixed_dictionaries(
    {"device_id": leaves, "site": leaves, "kind": st.sampled_from(["camera", "weather", 1]),
     "source": json_values, "model": json_values, "broker": json_values},
    optional={"limits": json_values, "api": json_values, "updates": json_values,
              "drift": json_values, "logging": json_values, "extends": leaves},
)  # fmt: skip


@FUZZ
@given(
    st.one_of(
        config_like.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
        st.text(max_size=300),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    )
)
def test_device_config_loads_or_raises_config_error(tmp_path_factory: Any, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "device.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_config(path)
    except ConfigError as e:
        assert e.issues


line_values = st.one_of(leaves.map(str), st.text(max_size=12))


@FUZZ
@given(
    st.one_of(
        st.lists(
            line_values, min_size=len(READING_FIELDS) + 2, max_size=len(READING_FIELDS) + 2
        ).map(",".join),
        st.text(max_size=200),
    )
)
def test_serial_sensor_lines_parse_or_are_rejected(line: str) -> None:
    try:
        reading = parse_line(line)
    except ReadingRejected as e:
        assert e.reason and str(e)
    else:
        assert isinstance(reading, StationReading) and reading.ts.tzinfo is not None


reading_like = st.fixed_dictionaries(
    {"ts": leaves, **{name: leaves for name in READING_FIELDS}},
    optional={"condition": leaves},
)


@FUZZ
@given(st.one_of(reading_like, st.dictionaries(st.text(max_size=8), leaves, max_size=6)))
def test_sensor_json_readings_parse_or_are_rejected(data: dict[str, Any]) -> None:
    try:
        reading = reading_from_mapping(data)
    except ReadingRejected as e:
        assert e.reason
    else:
        assert len(reading.values) == len(READING_FIELDS)


@FUZZ
@given(st.lists(st.one_of(reading_like.map(_dump), st.binary(max_size=80)), max_size=8))
def test_mqtt_sensor_source_survives_any_payloads(payloads: list[bytes]) -> None:
    # The real source and pipeline: payloads go in as paho would hand them over; read()
    # must return samples or nothing, and every rejected payload is counted.
    link = MqttLink(BrokerEndpoint("127.0.0.1", 1))  # never started: no network needed
    config = MqttSensorSourceConfig.model_validate(
        {"type": "mqtt_sensor", "name": "station", "topic": "sensors/station"}
    )
    source = MqttSensorSource(config, link)
    for payload in payloads:
        source._on_message("sensors/station", payload)
    for _ in payloads:
        sample = source.read(0.0)
        if sample is not None:
            assert sample.features is not None
            assert all(math.isfinite(v) for v in sample.features.values())
