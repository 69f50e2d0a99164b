"""Input sources: camera frames and weather-station readings, validated, as model samples."""

# The camera's capture (sources.camera, OpenCV) is not imported here: open_source does it.

from edge_agent.sources.base import SourceConfig, open_source
from edge_agent.sources.camera_config import CameraSourceConfig, MotionGateConfig
from edge_agent.sources.csv_replay import CsvReplaySource, CsvReplaySourceConfig
from edge_agent.sources.events import StreamEvent
from edge_agent.sources.mqtt_sensor import MqttSensorSource, MqttSensorSourceConfig
from edge_agent.sources.sample import Sample, Source, SourceClosed, SourceError
from edge_agent.sources.serial_line import SerialSource, SerialSourceConfig

__all__ = [
    "CameraSourceConfig",
    "CsvReplaySource",
    "CsvReplaySourceConfig",
    "MotionGateConfig",
    "MqttSensorSource",
    "MqttSensorSourceConfig",
    "Sample",
    "SerialSource",
    "SerialSourceConfig",
    "Source",
    "SourceClosed",
    "SourceConfig",
    "SourceError",
    "StreamEvent",
    "open_source",
]
