// Telemetry charts on the vendored uPlot, plus plain bars for shares and drift scores.
import { el, pct } from "./dom.js";

const COLORS = ["#2563eb", "#dc6803", "#0e9384", "#7a5af8"];

// A time-series chart that keeps its uPlot instance and only swaps data on refresh.
// `range` fixes the y scale (percentages read best on 0–100); otherwise it starts at 0.
export function timeChart(title, unit, names, range = null) {
  const holder = el("div", { class: "chart-body" });
  const box = el("figure", { class: "chart", dataset: { chart: title } },
    el("figcaption", {}, el("span", { text: title }), el("span", { class: "unit", text: unit })),
    holder);
  let plot = null;
  const observer = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: holder.clientWidth, height: 150 });
  });
  observer.observe(holder);
  return {
    node: box,
    update(xs, columns) {
      const data = [xs, ...columns];
      if (plot) { plot.setData(data); return; }
      plot = new window.uPlot({
        width: Math.max(holder.clientWidth, 240),
        height: 150,
        legend: { show: names.length > 1, live: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          y: { range: range ? () => range : (u, min, max) => [0, max > 0 ? max * 1.15 : 1] },
        },
        axes: [
          { stroke: "#667085", grid: { stroke: "#eaecf0" }, ticks: { stroke: "#eaecf0" } },
          { stroke: "#667085", grid: { stroke: "#eaecf0" }, ticks: { stroke: "#eaecf0" }, size: 44 },
        ],
        series: [{ label: "time" }, ...names.map((name, i) => ({
          label: name, stroke: COLORS[i % COLORS.length], width: 1.6, spanGaps: false,
          points: { show: xs.length < 40, size: 4 },
        }))],
      }, data, holder);
    },
    destroy() { observer.disconnect(); if (plot) plot.destroy(); },
  };
}

export function shareBars(labels) {
  const rows = Object.entries(labels).sort((a, b) => b[1].count - a[1].count);
  return el("div", { class: "bars" }, rows.map(([label, s]) => el(
    "div", { class: "bar-row", dataset: { label } },
    el("span", { class: "bar-label", text: label }),
    el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: `width:${(s.share * 100).toFixed(1)}%` })),
    el("span", { class: "bar-value", text: `${pct(s.share)} · ${s.count}` }),
    el("span", { class: "bar-note", text: `conf ${s.mean_confidence.toFixed(2)} · ${s.mean_latency_ms.toFixed(1)} ms` }),
  )));
}

// Scores where a lower value is the bad side: accuracy and F1 fall when a model degrades.
const LOWER_IS_WORSE = new Set(["accuracy", "f1"]);

// One bar per feature: its score against the threshold (the marker); red on its bad side.
export function driftBars(features) {
  return el("div", { class: "bars" }, features.map((f) => {
    const scale = Math.max(f.threshold * 2, f.score) || 1;
    const lower = LOWER_IS_WORSE.has(f.metric);
    const over = lower ? f.score < f.threshold : f.score > f.threshold;
    return el(
      "div", { class: "bar-row", dataset: { feature: f.name } },
      el("span", { class: "bar-label", text: `${f.name} (${f.metric})` }),
      el("span", { class: "bar-track" },
        el("span", { class: `bar-fill ${over ? "over" : "under"}`, style: `width:${(100 * f.score / scale).toFixed(1)}%` }),
        el("span", { class: "threshold", style: `left:${(100 * f.threshold / scale).toFixed(1)}%`, title: `threshold ${f.threshold}` })),
      el("span", { class: "bar-value", text: `${f.score.toFixed(3)} / ${f.threshold}` }),
      el("span", {
        class: `bar-note ${over ? "bad" : ""}`,
        text: over ? (lower ? "below threshold" : "over threshold") : "within",
      }),
    );
  }));
}
