"""The fleet dashboard: a static page on the fleet service's API, with live events and actions."""

from cloud_trainer.fleet.web.routes import mount_dashboard

__all__ = ["mount_dashboard"]
