"""Cloud side: training pipelines, registry and releases, and the fleet service."""

__version__ = "0.2.0"
