"""Durable store-and-forward: every outgoing message waits on disk until the broker acks it."""

from edge_agent.outbox.publisher import OutboxPublisher, PublisherStats
from edge_agent.outbox.store import OutboxError, OutboxRow, OutboxStore, Priority, priority_of

__all__ = [
    "OutboxError",
    "OutboxPublisher",
    "OutboxRow",
    "OutboxStore",
    "Priority",
    "PublisherStats",
    "priority_of",
]
