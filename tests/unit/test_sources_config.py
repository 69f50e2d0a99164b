"""Source config models: a discriminated union, strict, every field documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from edge_agent.sources import (
    CameraSourceConfig,
    CsvReplaySourceConfig,
    MotionGateConfig,
    MqttSensorSourceConfig,
    SerialSourceConfig,
    SourceConfig,
)

ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
MODELS: list[type[BaseModel]] = [
    CameraSourceConfig,
    CsvReplaySourceConfig,
    SerialSourceConfig,
    MqttSensorSourceConfig,
    MotionGateConfig,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_title_and_description(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.title, f"{model.__name__}.{name} has no title"
        assert field.description, f"{model.__name__}.{name} has no description"


def test_union_picks_the_plugin_by_type() -> None:
    cam = ADAPTER.validate_python({"type": "camera", "uri": "rtsp://cam/1", "fps": 2})
    assert isinstance(cam, CameraSourceConfig) and cam.on_end == "reconnect"
    device = ADAPTER.validate_python({"type": "camera", "uri": 0})
    assert isinstance(device, CameraSourceConfig) and device.uri == 0
    replay = ADAPTER.validate_python({"type": "csv_replay", "path": "w.csv.gz", "speed": 3600})
    assert isinstance(replay, CsvReplaySourceConfig) and replay.path == Path("w.csv.gz")
    serial = ADAPTER.validate_python({"type": "serial", "device": "/dev/ttyUSB0"})
    assert isinstance(serial, SerialSourceConfig) and serial.baud == 9600
    sensor = ADAPTER.validate_python({"type": "mqtt_sensor", "topic": "wx/1"})
    assert isinstance(sensor, MqttSensorSourceConfig)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"type": "webcam", "uri": 0}, "type"),
        ({"type": "camera", "uri": 0, "fsp": 5}, "fsp"),
        ({"type": "camera", "uri": 0, "fps": 0}, "fps"),
        ({"type": "camera", "uri": 0, "motion": {"enabled": True, "pixel_delta": 300}}, "motion"),
        ({"type": "serial", "device": "/dev/ttyS0", "baud": 12345}, "baud"),
        ({"type": "csv_replay", "path": "x.csv", "speed": -1}, "speed"),
    ],
)
def test_bad_configs_name_the_key(data: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        ADAPTER.validate_python(data)
    assert where in str(info.value)
