// Governance: each released model version's audit report, and drift alerts beside importance.
import { api } from "../api.js";
import { el, clear, when, badge, card, table } from "../dom.js";

function reportUrl(model, version) {
  return `/api/governance/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/report`;
}

function reportLink(model, version) {
  return el("a", { href: reportUrl(model, version), target: "_blank", rel: "noopener", class: "report-link", text: "Audit report" });
}

async function importanceCell(alert) {
  const cell = el("td", { class: "mono" });
  try {
    const data = await api(`/api/governance/alerts/${alert.id}/importance`);
    if (!data.analysed) {
      cell.textContent = "version not analysed";
      return cell;
    }
    cell.append(...data.features.map((f) => el("div", {},
      `${f.name}: `,
      f.importance_rank
        ? badge(`rank ${f.importance_rank} of ${data.n_features}`, f.importance_rank <= 5 ? "warn" : "muted")
        : badge("not a model input", "muted"))));
  } catch (err) {
    cell.textContent = err.message;
  }
  return cell;
}

export async function mountGovernance(root) {
  const reports = el("div");
  const alerts = el("div");
  const modelInput = el("input", { id: "report-model", placeholder: "model name", required: true });
  const versionInput = el("input", { id: "report-version", type: "number", min: 1, placeholder: "version", required: true });
  const form = el("form", { class: "inline", id: "report-form" }, modelInput, versionInput,
    el("button", { type: "submit", class: "primary", text: "Open report" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    window.open(reportUrl(modelInput.value.trim(), versionInput.value), "_blank", "noopener");
  });
  root.append(
    el("div", { class: "page-head" }, el("h1", { text: "Governance" })),
    el("div", { class: "page" },
      card("Audit reports of released versions", reports, el("h3", { text: "Any registered version" }), form),
      card("Drift alerts and the importance of the drifting features", alerts)),
  );

  async function refresh() {
    try {
      const data = await api("/api/releases");
      const seen = new Map();
      for (const r of data.releases) seen.set(`${r.model_name}/${r.version}`, r);
      clear(reports).append(table(["Model", "Version", "Latest release", "Published", ""],
        [...seen.values()].map((r) => el("tr", { dataset: { model: r.model_name, version: r.version } },
          el("td", { text: r.model_name }), el("td", { text: `v${r.version}` }),
          el("td", { class: "mono", text: r.release_id }), el("td", { text: when(r.created) }),
          el("td", {}, reportLink(r.model_name, r.version)))),
        "No release yet."));
      const found = await api("/api/alerts?limit=20");
      const rows = await Promise.all(found.alerts.map(async (a) => el("tr", { dataset: { alert: a.id } },
        el("td", { text: when(a.ts) }), el("td", { text: a.device_id }),
        el("td", { text: `${a.model_name} v${a.model_version}` }), el("td", { text: a.detector }),
        await importanceCell(a),
        el("td", {}, reportLink(a.model_name, a.model_version)))));
      clear(alerts).append(table(["Raised", "Device", "Model", "Detector", "Drifting features", ""], rows, "No alert yet."));
    } catch (err) {
      clear(reports).append(el("p", { class: "error", text: err.message }));
    }
  }

  await refresh();
  return { refresh, onLive(kind) { if (kind === "alerts" || kind === "releases") refresh(); } };
}
