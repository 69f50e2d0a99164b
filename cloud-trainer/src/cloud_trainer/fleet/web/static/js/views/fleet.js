// Fleet overview: every device with presence, model and drift; filters kept in the URL.
import { api } from "../api.js";
import { el, clear, ago, when, badge, card, table, throttle } from "../dom.js";

const FILTERS = [
  ["site", "Site", "All sites"],
  ["kind", "Kind", "All kinds"],
  ["model", "Model", "All models"],
  ["online", "Status", "Any status"],
];

function options(devices, key) {
  if (key === "online") return [["true", "online"], ["false", "offline"]];
  const field = key === "model" ? "model_name" : key;
  const values = [...new Set(devices.map((d) => d[field]).filter(Boolean))].sort();
  return values.map((v) => [v, v]);
}

function filterBar(all, params) {
  const bar = el("form", { class: "filters", id: "filters" });
  for (const [key, label, any] of FILTERS) {
    const select = el(
      "select", { name: key, id: `filter-${key}`, "aria-label": label },
      el("option", { value: "", text: any }),
      options(all, key).map(([value, text]) =>
        el("option", { value, text, selected: params.get(key) === value })),
    );
    select.addEventListener("change", () => {
      const query = new URLSearchParams(new FormData(bar));
      for (const [k, v] of [...query.entries()]) if (!v) query.delete(k);
      location.hash = `#/fleet${query.toString() ? `?${query}` : ""}`;
    });
    bar.append(el("label", {}, el("span", { text: label }), select));
  }
  if ([...params.keys()].length) {
    bar.append(el("a", { href: "#/fleet", class: "reset", text: "Clear filters" }));
  }
  return bar;
}

function summary(all, unacked) {
  const online = all.filter((d) => d.online).length;
  const drifting = all.filter((d) => d.drift_status !== "ok").length;
  const stat = (label, value, kind = "") =>
    el("div", { class: `stat ${kind}` }, el("strong", { text: value }), el("span", { text: label }));
  return el(
    "div", { class: "stats" },
    stat("devices", all.length),
    stat("online", online, "good"),
    stat("offline", all.length - online, all.length - online ? "bad" : ""),
    stat("drifting", drifting, drifting ? "warn" : ""),
    stat("open alerts", unacked, unacked ? "warn" : ""),
  );
}

function row(d, now) {
  const model = d.model_name ? `${d.model_name} v${d.model_version ?? "?"}` : "—";
  const drift = d.drift_status === "ok"
    ? badge("ok", "good")
    : badge(`${d.drift_status}${d.drift_detectors?.length ? `: ${d.drift_detectors.join(", ")}` : ""}`, "warn");
  return el(
    "tr", { dataset: { device: d.device_id } },
    el("td", {}, el("span", { class: `dot ${d.online ? "on" : "off"}` }),
      el("span", { class: "presence", text: d.online ? "online" : "offline" })),
    el("td", {}, el("a", { href: `#/device/${encodeURIComponent(d.device_id)}`, text: d.device_id })),
    el("td", { text: d.site }),
    el("td", { text: d.kind || "—" }),
    el("td", { class: "model", text: model }),
    el("td", { class: "drift" }, drift),
    el("td", { title: when(d.last_seen), text: ago(d.last_seen, now) }),
    el("td", { class: "muted", text: d.state }),
  );
}

export async function mountFleet(root, route) {
  const params = route.params;
  const stats = el("div");
  const filters = el("div");
  const list = el("div");
  let optionsKey = null;
  root.append(
    el("div", { class: "page-head" }, el("h1", { text: "Fleet" })),
    el("div", { class: "page" }, stats, card(null, filters, list)),
  );

  async function refresh() {
    const query = new URLSearchParams();
    for (const [key] of FILTERS) if (params.get(key)) query.set(key, params.get(key));
    let all, shown, alerts;
    try {
      [all, shown, alerts] = await Promise.all([
        api("/api/devices"),
        api(`/api/devices?${query}`),
        api("/api/alerts?unacknowledged=true&limit=1000"),
      ]);
    } catch (err) {
      clear(list).append(el("p", { class: "error", text: err.message }));
      return;
    }
    clear(stats).append(summary(all.devices, alerts.count));
    // The filter bar is rebuilt only when its choices change, so a live refresh never
    // closes a menu the user has open.
    const key = JSON.stringify(FILTERS.map(([k]) => options(all.devices, k)));
    if (key !== optionsKey) {
      optionsKey = key;
      clear(filters).append(filterBar(all.devices, params));
    }
    clear(list).append(
      el("p", { class: "muted", id: "shown-count", text: `${shown.count} of ${all.count} devices` }),
      table(
        ["Status", "Device", "Site", "Kind", "Model", "Drift", "Last seen", "State"],
        shown.devices.map((d) => row(d, shown.now)),
        "No device matches these filters.",
      ),
    );
  }

  await refresh();
  const live = throttle(refresh, 1500);
  const ticker = setInterval(refresh, 15000);
  return {
    refresh,
    onLive(kind) { if (kind === "devices" || kind === "alerts") live(); },
    destroy() { clearInterval(ticker); },
  };
}
