"""Connections to the outside world: the MQTT link and its dispatcher."""

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink, PublishResult

__all__ = ["BrokerEndpoint", "MqttLink", "PublishResult"]
