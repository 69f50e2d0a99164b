"""Edge inference agent: runs a model on a device and keeps the cloud informed."""

__version__ = "0.2.0"
