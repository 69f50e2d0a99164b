"""The local HTTP API for operators: health, metrics, model, predict, drift, commands."""

from edge_agent.api.app import create_app
from edge_agent.api.server import ApiServer

__all__ = ["ApiServer", "create_app"]
