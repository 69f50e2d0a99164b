"""Source plugins behind one interface; ``open_source`` builds one from its config."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from edge_agent.comms.mqtt import MqttLink
from edge_agent.config.extras import ExtraMissing, require_opencv
from edge_agent.sources.camera_config import CameraSourceConfig
from edge_agent.sources.csv_replay import CsvReplaySource, CsvReplaySourceConfig
from edge_agent.sources.mqtt_sensor import MqttSensorSource, MqttSensorSourceConfig
from edge_agent.sources.sample import Sample, Source, SourceClosed, SourceError
from edge_agent.sources.serial_line import SerialSource, SerialSourceConfig

SourceConfig = Annotated[
    CameraSourceConfig | CsvReplaySourceConfig | SerialSourceConfig | MqttSensorSourceConfig,
    Field(discriminator="type"),
]

__all__ = [
    "Sample",
    "Source",
    "SourceClosed",
    "SourceConfig",
    "SourceError",
    "open_source",
]


def open_source(
    config: CameraSourceConfig
    | CsvReplaySourceConfig
    | SerialSourceConfig
    | MqttSensorSourceConfig,
    *,
    mqtt: MqttLink | None = None,
) -> Source:
    """Build the source a config describes; SourceError when it cannot be built."""
    if isinstance(config, CameraSourceConfig):
        try:
            require_opencv("the camera source")
        except ExtraMissing as e:
            raise SourceError(f"source {config.name}: {e}") from e
        # Imported here: OpenCV stays out of a weather station's process.
        from edge_agent.sources.camera import CameraSource

        return CameraSource(config)
    if isinstance(config, CsvReplaySourceConfig):
        return CsvReplaySource(config)
    if isinstance(config, SerialSourceConfig):
        return SerialSource(config)
    if mqtt is None:
        raise SourceError(f"source {config.name}: an MQTT sensor source needs the MQTT link")
    return MqttSensorSource(config, mqtt)
