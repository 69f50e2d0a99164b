// Device detail: telemetry charts, prediction shares, drift against thresholds, history, actions.
import { api, sendCommand } from "../api.js";
import { el, clear, ago, when, badge, card, table, throttle } from "../dom.js";
import { timeChart, shareBars, driftBars } from "../charts.js";

const PERCENT = [0, 100];
const CHARTS = [
  ["CPU", "%", ["cpu"], (t) => [t.cpu_percent], PERCENT],
  ["Memory", "%", ["memory"], (t) => [t.mem_percent], PERCENT],
  ["Temperature", "°C", ["temperature"], (t) => [t.temperature_c]],
  ["Inference latency", "ms", ["p50", "p95"], (t) => [t.inference_p50_ms, t.inference_p95_ms]],
  ["Frames per second", "fps", ["fps"], (t) => [t.fps]],
];
// Accuracy on labelled predictions (weather stations, whose labels arrive later): charted
// only once the device reports it, with n, the labelled predictions behind the latest point.
const QUALITY = ["Labelled accuracy", "0–1", ["accuracy", "macro-F1"]];
const STATE_KIND = { committed: "good", done: "good", failed: "bad", rolled_back: "bad", rejected: "bad", refused: "muted" };

function header(d, now, faulty = []) {
  const fact = (label, value) => el("div", { class: "fact" }, el("span", { text: label }), el("strong", { text: value }));
  return el(
    "div", { class: "facts" },
    fact("Status", d.online ? "online" : "offline"),
    fact("Site", d.site),
    fact("Kind", d.kind || "—"),
    fact("Model", d.model_name ? `${d.model_name} v${d.model_version ?? "?"}` : "—"),
    fact("Drift", d.drift_status === "ok" ? "ok" : `${d.drift_status} (${(d.drift_detectors || []).join(", ")})`),
    fact("Sensors", faulty.length ? `faulty (${faulty.join(", ")})` : "ok"),
    fact("Last seen", ago(d.last_seen, now)),
    fact("Agent", d.agent_version || "—"),
  );
}

function latestPerDetector(alerts) {
  const seen = new Map();
  for (const a of alerts) if (!seen.has(a.detector)) seen.set(a.detector, a);
  return [...seen.values()];
}

function driftSection(alerts) {
  const latest = latestPerDetector(alerts);
  if (!latest.length) return el("p", { class: "empty", text: "No drift reported." });
  return el("div", {}, latest.map((a) => el(
    "div", { class: "detector", dataset: { detector: a.detector } },
    el("div", { class: "detector-head" },
      el("strong", { text: a.detector }),
      badge(a.state, a.state === "raised" ? "warn" : "good"),
      badge(a.severity, a.severity === "critical" ? "bad" : "muted"),
      el("span", { class: "muted", text: `${when(a.ts)} · window of ${a.window_n}` })),
    driftBars(a.features),
  )));
}

// Sensor health: the faults open now (a sensor and the test that judged it), then the
// recent verdicts, raised and cleared, with the reading times they are about.
function sensorSection(faults) {
  const open = faults ? faults.open : [];
  const history = faults ? faults.history : [];
  const now = open.length
    ? el("ul", { class: "sensor-faults" }, open.map((f) => el(
        "li", { dataset: { sensor: f.sensor, test: f.test } },
        badge(f.sensor, "bad"), " ", badge(f.test, "warn"),
        el("span", { class: "muted", text: ` since ${when(f.since)}` }),
        el("div", { class: "muted", text: f.summary }))))
    : el("p", { class: "empty", text: "All sensors healthy." });
  return el("div", { id: "sensor-health" }, now,
    el("h3", { text: "Recent verdicts" }),
    table(["Reading time", "Sensor", "Test", "State", "Since"], history.slice(0, 20).map((f) => el(
      "tr", { dataset: { sensor: f.sensor, state: f.state } },
      el("td", { text: when(f.observed_at) }),
      el("td", { class: "mono", text: f.sensor }),
      el("td", { text: f.test }),
      el("td", {}, badge(f.state, f.state === "raised" ? "bad" : "good")),
      el("td", { text: when(f.since) }),
    )), "No sensor faults reported."));
}

// A camera's visits (newest first; no end yet while one is under way) and its stream's
// losses and recoveries. Snapshots stay on the device: the id names one for its local API.
function visitSection(visits, streamEvents) {
  const duration = (v) => (v.ended_at == null ? "under way" : `${Math.max(0, v.ended_at - v.started_at).toFixed(1)} s`);
  const rows = visits.slice(0, 20).map((v) => el(
    "tr", { dataset: { visit: v.visit_id, label: v.label } },
    el("td", { text: when(v.started_at) }),
    el("td", {}, badge(v.label, "")),
    el("td", { text: v.confidence.toFixed(2) }),
    el("td", { text: duration(v) }),
    el("td", { text: `${v.subject_frames} / ${v.frames}` }),
    el("td", { class: "mono", text: v.snapshot_id ? `${v.snapshot_id} · ${Math.round(v.snapshot_bytes / 1024)} KiB` : "—" }),
  ));
  const streams = streamEvents.slice(0, 10).map((e) => el(
    "tr", { dataset: { state: e.state } },
    el("td", { text: when(e.at) }),
    el("td", { class: "mono", text: e.source }),
    el("td", {}, badge(e.state, e.state === "restored" ? "good" : "bad")),
    el("td", { class: "muted", text: e.down_s != null ? `down ${e.down_s.toFixed(1)} s` : e.detail || "" }),
  ));
  return el("div", { id: "visits" },
    table(["Started", "Label", "Best confidence", "Duration", "Subject / all frames", "Snapshot"], rows, "No visits reported."),
    streams.length ? el("h3", { text: "Stream" }) : null,
    streams.length ? table(["When", "Source", "State", ""], streams, "") : null);
}

function actions(device, ctx, onSent) {
  const version = el("input", { type: "number", min: "0", id: "pin-version", value: device.model_version ?? "", "aria-label": "Version to pin" });
  const send = async (action, args, label) => {
    if (!(await ctx.requireLogin())) return;
    try {
      const sent = await sendCommand(device.device_id, action, args);
      ctx.toast(`${label} sent to ${device.device_id} (${sent.cmd_id})`);
      onSent();
    } catch (err) {
      ctx.toast(`${label} failed: ${err.message}`, "error");
    }
  };
  const pin = () => {
    const v = version.value.trim();
    if (v !== "" && !/^\d+$/.test(v)) { ctx.toast("The version must be a whole number.", "error"); return; }
    send("pin", v === "" ? {} : { version: Number(v) }, v === "" ? "Pin" : `Pin to v${v}`);
  };
  return el(
    "div", { class: "actions" },
    el("label", {}, el("span", { text: "Version" }), version),
    el("button", { type: "button", id: "pin", "data-acts": true, class: "primary", onclick: pin, text: "Pin" }),
    el("button", { type: "button", id: "unpin", "data-acts": true, onclick: () => send("unpin", {}, "Unpin"), text: "Unpin" }),
    el("button", { type: "button", id: "device-rollback", "data-acts": true, class: "danger", onclick: () => send("rollback", {}, "Roll back"), text: "Roll back model" }),
    el("button", { type: "button", id: "update-check", "data-acts": true, onclick: () => send("update_check", {}, "Update check"), text: "Check for update" }),
    ctx.canAct() ? null : el("span", { class: "muted read-only-note", text: "Signed in with a viewer token: commands need an operator token." }),
  );
}

export async function mountDevice(root, route, ctx) {
  const id = route.arg;
  const charts = CHARTS.map(([title, unit, names, pick, range]) => ({ chart: timeChart(title, unit, names, range), pick }));
  const chartBox = el("div", { class: "charts" }, charts.map((c) => c.chart.node));
  let quality = null;
  const facts = el("div");
  const predictions = el("div");
  const drift = el("div");
  const sensors = el("div");
  const visits = el("div");
  const updates = el("div");
  const commands = el("div");
  const actionBox = el("div");
  root.append(
    el("div", { class: "page-head" },
      el("a", { href: "#/fleet", class: "back", text: "← Fleet" }),
      el("h1", { text: id })),
    el("div", { class: "page" },
      facts,
      card("Telemetry, last 24 h", chartBox),
      el("div", { class: "columns" },
        card("Predictions, last 24 h", predictions),
        card("Drift: score against threshold", drift)),
      card("Sensor health", sensors),
      card("Visits", visits),
      el("div", { class: "columns" },
        card("Update history", updates),
        card("Actions", actionBox, commands))),
  );

  async function refresh() {
    let data;
    try {
      data = await api(`/api/devices/${encodeURIComponent(id)}`);
    } catch (err) {
      clear(facts).append(el("p", { class: "error", text: err.status === 404 ? `No device ${id}.` : err.message }));
      return;
    }
    const now = Date.now() / 1000;
    clear(facts).append(header(data.device, now, data.sensor_faults ? data.sensor_faults.faulty : []));
    const xs = data.telemetry.map((t) => t.ts);
    for (const { chart, pick } of charts) {
      const values = data.telemetry.map(pick);
      chart.update(xs, values.length ? values[0].map((_, i) => values.map((v) => v[i])) : pick({}).map(() => []));
    }
    const labelled = data.telemetry.filter((t) => t.labelled_n != null);
    if (labelled.length && !quality) {
      const [title, unit, names] = QUALITY;
      quality = { chart: timeChart(title, unit, names, [0, 1]), note: el("p", { class: "chart-note muted" }) };
      quality.chart.node.append(quality.note);
      chartBox.append(quality.chart.node);
    }
    if (quality) {
      quality.chart.update(xs, [data.telemetry.map((t) => t.accuracy ?? null), data.telemetry.map((t) => t.macro_f1 ?? null)]);
      const last = labelled[labelled.length - 1];
      quality.note.dataset.n = last ? String(last.labelled_n) : "0";
      quality.note.textContent = last
        ? `latest: accuracy ${last.accuracy.toFixed(3)} · macro-F1 ${last.macro_f1.toFixed(3)} · n = ${last.labelled_n}`
        : "No labelled predictions in this window.";
    }
    const versions = data.predictions.versions;
    clear(predictions).append(versions.length
      ? el("div", {}, versions.map((v) => el("div", { class: "version-block" },
          el("h3", { text: `${v.model_name} v${v.model_version} · ${v.total} predictions` }), shareBars(v.labels))))
      : el("p", { class: "empty", text: "No predictions in this window." }));
    clear(drift).append(driftSection(data.alerts));
    clear(sensors).append(sensorSection(data.sensor_faults));
    clear(visits).append(visitSection(data.visits || [], data.stream_events || []));
    clear(updates).append(table(["When", "Release", "Version", "State", "Reason"], data.updates.map((u) => el(
      "tr", {},
      el("td", { text: when(u.ts) }),
      el("td", { class: "mono", text: u.release_id || "—" }),
      el("td", { text: `v${u.from_version ?? "?"} → v${u.to_version}` }),
      el("td", {}, badge(u.state, STATE_KIND[u.state] || "")),
      el("td", { class: "muted", text: u.reason || "" }),
    )), "No updates reported."));
    clear(actionBox).append(actions(data.device, ctx, refreshSoon));
    clear(commands).append(el("h3", { text: "Commands" }), table(["Sent", "Action", "Args", "By", "Status"], data.commands.map((c) => el(
      "tr", { dataset: { cmd: c.cmd_id, action: c.action } },
      el("td", { text: ago(c.issued_at, now) }),
      el("td", { text: c.action }),
      el("td", { class: "mono", text: Object.entries(c.args || {}).map(([k, v]) => `${k}=${v}`).join(" ") }),
      el("td", { text: c.issued_by }),
      el("td", { class: "status" }, badge(c.status, STATE_KIND[c.status] || "")),
    )), "No commands sent."));
  }

  const refreshSoon = throttle(refresh, 1000);
  await refresh();
  return {
    refresh,
    onLive(kind, data) {
      if (kind === "commands" || kind === "alerts" || (kind === "devices" && data.changed.includes(id))) refreshSoon();
    },
    destroy() { charts.forEach((c) => c.chart.destroy()); if (quality) quality.chart.destroy(); },
  };
}
