// Drift alerts, newest first, with acknowledge for signed-in operators.
import { api } from "../api.js";
import { el, clear, when, badge, card, table, throttle } from "../dom.js";

function features(a) {
  return a.features.map((f) => `${f.name} ${f.metric} ${f.score.toFixed(2)}/${f.threshold}`).join(", ");
}

export async function mountAlerts(root, route, ctx) {
  const onlyOpen = route.params.get("open") !== "false";
  const toggle = el("input", { type: "checkbox", id: "only-open", checked: onlyOpen });
  toggle.addEventListener("change", () => { location.hash = `#/alerts?open=${toggle.checked}`; });
  const body = el("div");
  root.append(
    el("div", { class: "page-head" }, el("h1", { text: "Drift alerts" }),
      el("label", { class: "check" }, toggle, el("span", { text: "Unacknowledged only" }))),
    el("div", { class: "page" }, card(null, body)),
  );

  async function acknowledge(alert) {
    if (!(await ctx.requireLogin())) return;
    try {
      const done = await api(`/api/alerts/${alert.id}/ack`, { method: "POST" });
      ctx.toast(`Alert ${alert.id} acknowledged by ${done.acknowledged_by}`);
    } catch (err) {
      ctx.toast(`Acknowledge failed: ${err.message}`, "error");
    }
    refresh();
  }

  async function refresh() {
    let data;
    try {
      data = await api(`/api/alerts${onlyOpen ? "?unacknowledged=true" : ""}`);
    } catch (err) {
      clear(body).append(el("p", { class: "error", text: err.message }));
      return;
    }
    clear(body).append(table(
      ["Raised", "Device", "Model", "Detector", "Severity", "State", "Features (score/threshold)", "Summary", ""],
      data.alerts.map((a) => el(
        "tr", { dataset: { alert: a.id } },
        el("td", { text: when(a.ts) }),
        el("td", {}, el("a", { href: `#/device/${encodeURIComponent(a.device_id)}`, text: a.device_id })),
        el("td", { text: `${a.model_name} v${a.model_version}` }),
        el("td", { text: a.detector }),
        el("td", {}, badge(a.severity, a.severity === "critical" ? "bad" : "warn")),
        el("td", {}, badge(a.state, a.state === "raised" ? "warn" : "good")),
        el("td", { class: "mono", text: features(a) }),
        el("td", { text: a.summary }),
        el("td", { class: "ack" }, a.acknowledged_at
          ? el("span", { class: "muted", text: `acknowledged by ${a.acknowledged_by}` })
          : el("button", { type: "button", "data-acts": true, class: "ack-button", onclick: () => acknowledge(a), text: "Acknowledge" })),
      )),
      onlyOpen ? "No open alert." : "No alert yet.",
    ));
  }

  await refresh();
  const live = throttle(refresh, 1000);
  return { refresh, onLive(kind) { if (kind === "alerts") live(); } };
}
