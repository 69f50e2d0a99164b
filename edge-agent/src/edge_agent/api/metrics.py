"""The agent's state in the Prometheus text exposition format (version 0.0.4).

Names follow Prometheus's conventions, which ``promtool check metrics`` lints: base units
(seconds, bytes, ratios), ``_total`` on counters, and quantiles only on a summary.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.runtime.agent import EdgeAgent

Labels = dict[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample_value(value: float) -> str:
    """A sample as the format spells it: exact for counts (``%g`` would round 1234567 to
    1.23457e+06), shortest round-trip otherwise, and ``NaN``/``+Inf``/``-Inf``."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def _header(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def _sample(self, name: str, labels: Labels, value: float) -> None:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        number = sample_value(value)
        self.lines.append(f"{name}{{{label_text}}} {number}" if labels else f"{name} {number}")

    def metric(
        self, name: str, kind: str, help_text: str, samples: list[tuple[Labels, float]]
    ) -> None:
        self._header(name, kind, help_text)
        for labels, value in samples:
            self._sample(name, labels, value)

    def summary(
        self,
        name: str,
        help_text: str,
        labels: Labels,
        quantiles: dict[str, float],
        total: float,
        count: int,
    ) -> None:
        self._header(name, "summary", help_text)
        for quantile, value in quantiles.items():
            self._sample(name, {**labels, "quantile": quantile}, value)
        self._sample(f"{name}_sum", labels, total)
        self._sample(f"{name}_count", labels, count)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(agent: EdgeAgent) -> str:
    out = _Exposition()
    engine = agent.slot.current
    latency = engine.latency.snapshot()
    reading = agent.host.read()
    model = {"model": engine.spec.name, "sha256": engine.sha256[:12]}
    out.metric(
        "edge_predictions_total",
        "counter",
        "Predictions queued for publishing.",
        [({}, agent.predictions)],
    )
    # The agent keeps the latest latencies (a ring) and a running count and sum: a summary
    # says exactly that. No quantile exists before the first inference, hence NaN, not 0.
    seen = latency.count > 0
    out.summary(
        "edge_inference_latency_seconds",
        f"Inference latency; quantiles over the last {engine.latency.capacity} inferences.",
        model,
        {
            "0.5": latency.p50_ms / 1000 if seen else math.nan,
            "0.95": latency.p95_ms / 1000 if seen else math.nan,
        },
        latency.total_ms / 1000,
        latency.count,
    )
    out.metric(
        "edge_inference_fps",
        "gauge",
        "Inferences per second, recent window.",
        [(model, latency.fps)],
    )
    out.metric(
        "edge_outbox_depth",
        "gauge",
        "Messages waiting for a broker ack.",
        [({"class": k}, v) for k, v in agent.store.depth_by_priority().items()],
    )
    out.metric(
        "edge_outbox_bytes", "gauge", "Bytes the outbox holds.", [({}, agent.store.size_bytes)]
    )
    out.metric(
        "edge_outbox_dropped_total",
        "counter",
        "Messages the outbox dropped, by reason.",
        [({"reason": k}, v) for k, v in sorted(agent.store.dropped().items())],
    )
    out.metric(
        "edge_published_total",
        "counter",
        "Messages handed to the broker.",
        [({}, agent.publisher.stats.published)],
    )
    out.metric(
        "edge_acked_total",
        "counter",
        "Messages the broker acknowledged.",
        [({}, agent.publisher.stats.acked)],
    )
    out.metric(
        "edge_broker_connected",
        "gauge",
        "1 while connected to the broker.",
        [({}, 1.0 if agent.link.connected.is_set() else 0.0)],
    )
    counters = dict(agent.counters)
    if agent.source is not None:
        counters.update({f"source_{k}": v for k, v in agent.source.counters.items()})
    out.metric(
        "edge_events_total",
        "counter",
        "Rejected inputs, skips and errors, by name.",
        [({"name": k}, v) for k, v in sorted(counters.items())],
    )
    out.metric(
        "edge_worker_restarts_total",
        "counter",
        "Watchdog restarts per worker.",
        [({"worker": k}, v) for k, v in agent.supervisor.restarts().items()],
    )
    out.metric(
        "edge_process_rss_bytes",
        "gauge",
        "Resident memory of the agent.",
        [({}, reading.rss_bytes)],
    )
    out.metric(
        "edge_cpu_usage_ratio",
        "gauge",
        "Host CPU use, 0 to 1 (telemetry carries it as cpu_percent).",
        [({}, reading.cpu_percent / 100)],
    )
    out.metric(
        "edge_uptime_seconds", "gauge", "Seconds since the agent started.", [({}, reading.uptime_s)]
    )
    return out.text()
