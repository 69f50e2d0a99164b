"""The fleet service: stores what devices report, decides on drift, and serves an HTTP API."""
