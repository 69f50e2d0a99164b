"""Ingestion from MQTT: a shared-subscription consumer feeding a batch writer."""

from cloud_trainer.fleet.consumer.consumer import (
    CHANNEL_TYPES,
    ConsumerSettings,
    FleetConsumer,
    consumer_client_id,
)
from cloud_trainer.fleet.consumer.writer import WriterSettings

__all__ = [
    "CHANNEL_TYPES",
    "ConsumerSettings",
    "FleetConsumer",
    "WriterSettings",
    "consumer_client_id",
]
