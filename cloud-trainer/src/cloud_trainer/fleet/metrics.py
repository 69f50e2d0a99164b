"""Counters and gauges of the fleet service, rendered in the Prometheus text format."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

from edge_agent.api.metrics import sample_value

Labels = tuple[tuple[str, str], ...]

_HELP = {
    "fleet_messages_received_total": "MQTT messages received, by channel.",
    "fleet_messages_stored_total": "Messages stored for the first time, by type.",
    "fleet_messages_duplicate_total": "Messages already stored (store-and-forward replays).",
    "fleet_messages_rejected_total": "Messages refused, by reason.",
    "fleet_releases_seen_total": "Release manifests read from the releases topic.",
    "fleet_batches_written_total": "Batches written to the store.",
    "fleet_batch_write_seconds_total": "Time spent writing batches.",
    "fleet_store_errors_total": "Failed batch writes (retried).",
    "fleet_ingest_queue_depth": "Messages received and not yet written.",
    "fleet_devices_online": "Devices online now.",
    "fleet_http_requests_total": "HTTP requests answered, by status code.",
    "fleet_http_overload_total": "HTTP requests refused with 503 because the service was busy.",
    "fleet_policy_actions_total": "Policy actions, by action and outcome.",
    "fleet_commands_sent_total": "Commands published to devices.",
    "fleet_samples_stored_total": "Captured samples stored.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class FleetMetrics:
    """In-process counters; gauges are read through callables when scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] += amount

    def value(self, name: str, **labels: str) -> float:
        """One counter's value; without labels, the sum over all label sets."""
        with self._lock:
            series = self._counters.get(name, {})
            if labels:
                return series.get(tuple(sorted(labels.items())), 0.0)
            return sum(series.values())

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._counters.items()}
        for name in sorted(snapshot):
            lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} counter"]
            for labels, amount in sorted(snapshot[name].items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                number = sample_value(amount)
                lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
        for name in sorted(self._gauges):
            lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} gauge"]
            lines.append(f"{name} {sample_value(float(self._gauges[name]()))}")
        return "\n".join(lines) + "\n"
