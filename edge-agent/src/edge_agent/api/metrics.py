"""The agent's state in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.runtime.agent import EdgeAgent


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            self.lines.append(
                f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}"
            )

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
    out.metric(
        "edge_inference_latency_ms",
        "gauge",
        "Recent inference latency.",
        [
            ({**model, "quantile": "0.5"}, latency.p50_ms),
            ({**model, "quantile": "0.95"}, latency.p95_ms),
        ],
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
    out.metric("edge_cpu_percent", "gauge", "Host CPU use.", [({}, reading.cpu_percent)])
    out.metric(
        "edge_uptime_seconds", "gauge", "Seconds since the agent started.", [({}, reading.uptime_s)]
    )
    return out.text()
