"""Visits of the camera's subject: per-frame answers turned into start and end events."""

from edge_agent.visits.config import PredictionsMode, VisitsConfig, publishes_prediction
from edge_agent.visits.tracker import Visit, VisitTracker

__all__ = ["PredictionsMode", "Visit", "VisitTracker", "VisitsConfig", "publishes_prediction"]
