"""Input sources: camera frames and weather-station readings, validated, as model samples."""

from edge_agent.sources.base import SourceConfig, open_source
from edge_agent.sources.camera import CameraSource, CameraSourceConfig
from edge_agent.sources.csv_replay import CsvReplaySource, CsvReplaySourceConfig
from edge_agent.sources.events import StreamEvent
from edge_agent.sources.motion import MotionGateConfig
from edge_agent.sources.mqtt_sensor import MqttSensorSource, MqttSensorSourceConfig
from edge_agent.sources.sample import Sample, Source, SourceClosed, SourceError
from edge_agent.sources.serial_line import SerialSource, SerialSourceConfig

__all__ = [
    "CameraSource",
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
