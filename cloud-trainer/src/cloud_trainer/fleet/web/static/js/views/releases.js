// Releases by model: rollout waves, each device's outcome, and promote / roll back.
import { api } from "../api.js";
import { el, clear, ago, when, badge, card, table, throttle } from "../dom.js";

const OUTCOME_KIND = { committed: "good", failed: "bad", rolled_back: "bad", refused: "muted", idle: "muted" };
const LADDER = [5, 10, 25, 50, 100];

const STEP_KIND = { started: "", advanced: "good", done: "good", aborted: "bad", restored: "warn", stopped: "muted" };

// The same words as the release CLI: named groups and devices, plus a share of the others.
function audience(r) {
  const rollout = r.rollout || {};
  const parts = [];
  if (rollout.groups?.length) parts.push(`groups ${rollout.groups.join(", ")}`);
  if (rollout.devices?.length) parts.push(`devices ${rollout.devices.join(", ")}`);
  const percent = rollout.percent ?? 100;
  if (percent >= 100) parts.push(parts.length ? "every other device" : "every device");
  else if (percent > 0) parts.push(`${percent}% of the ${parts.length ? "others" : "fleet"}`);
  return parts.join(" + ") || "no device";
}

// The rollout's steps as the release tooling recorded them: waves, the abort and its reason,
// what was restored and why.
function history(r, now) {
  if (!r.history?.length) return null;
  return el("ol", { class: "rollout-history" }, r.history.map((s) => el(
    "li", { dataset: { action: s.action } },
    badge(s.action, STEP_KIND[s.action] || ""),
    el("span", { text: ` wave ${s.wave}` }),
    s.audience ? el("span", { class: "muted", text: ` · ${s.audience}` }) : null,
    el("span", { text: s.reason ? ` · ${s.reason}` : "" }),
    el("span", { class: "muted", title: when(s.ts), text: ` · ${ago(s.ts, now)}` }),
  )));
}

function outcomes(r) {
  const counts = Object.entries(r.outcome_counts).sort();
  if (!counts.length) return null;
  return el("div", { class: "pills" },
    counts.map(([state, n]) => badge(`${state} ${n}`, OUTCOME_KIND[state] || "")));
}

function act(ctx, label, path, body, done) {
  return async () => {
    if (!(await ctx.requireLogin())) return;
    try {
      const result = await api(path, { method: "POST", body });
      ctx.toast(`${label}: ${result.release_id} (v${result.version}, wave ${result.wave}, ${result.percent}%)`);
      done();
    } catch (err) {
      ctx.toast(`${label} failed: ${err.message}`, "error");
    }
  };
}

function promoteControl(r, ctx, done) {
  const current = r.rollout?.percent ?? 100;
  const wider = LADDER.filter((p) => p > current);
  if (!wider.length) return el("span", { class: "muted", text: "reaches the whole fleet" });
  const select = el("select", { class: "promote-percent", "aria-label": "Widen to" },
    wider.map((p) => el("option", { value: p, text: `${p}%` })));
  const button = el("button", { type: "button", "data-acts": true, class: "primary promote", text: "Promote" });
  button.addEventListener("click", () =>
    act(ctx, "Promoted", `/api/releases/${encodeURIComponent(r.release_id)}/promote`,
      { percent: Number(select.value) }, done)());
  return el("span", { class: "inline" }, el("span", { text: "Next wave to" }), select, button);
}

function rollbackControl(model, releases, ctx, done) {
  const currentVersion = releases[0].version;
  const earlier = [...new Set(releases.map((r) => r.version))].filter((v) => v !== currentVersion).sort((a, b) => b - a);
  if (!earlier.length) return el("span", { class: "muted", text: "no earlier version to restore" });
  const select = el("select", { class: "rollback-version", "aria-label": "Version to restore" },
    earlier.map((v) => el("option", { value: v, text: `v${v}` })));
  const button = el("button", { type: "button", "data-acts": true, class: "danger rollback", text: "Roll back" });
  button.addEventListener("click", () => {
    if (!window.confirm(`Release ${model} v${select.value} to every device again?`)) return;
    act(ctx, "Rolled back", `/api/models/${encodeURIComponent(model)}/rollback`,
      { to_version: Number(select.value) }, done)();
  });
  return el("span", { class: "inline" }, el("span", { text: "Restore" }), select, button);
}

function releaseBlock(r, isCurrent, ctx, done) {
  const now = Date.now() / 1000;
  return el(
    "article", { class: `release ${isCurrent ? "current" : ""}`, dataset: { release: r.release_id } },
    el("div", { class: "release-head" },
      el("strong", { class: "mono", text: r.release_id }),
      isCurrent ? badge("current", "good") : badge("superseded", "muted"),
      r.history?.some((s) => s.action === "aborted") ? badge("aborted", "bad") : null,
      badge(`wave ${r.wave}`),
      el("span", { text: `v${r.version} · ${r.channel} · ${audience(r)}` }),
      el("span", { class: "muted", title: when(r.created), text: `published ${ago(r.created, now)}` })),
    outcomes(r),
    history(r, now),
    isCurrent && ctx.caps.release_actions ? el("div", { class: "actions" }, promoteControl(r, ctx, done)) : null,
    table(["Device", "Outcome", "Updated", "Reason"], r.devices.map((d) => el(
      "tr", { dataset: { device: d.device_id } },
      el("td", {}, el("a", { href: `#/device/${encodeURIComponent(d.device_id)}`, text: d.device_id })),
      el("td", {}, badge(d.state, OUTCOME_KIND[d.state] || "")),
      el("td", { text: ago(d.updated_at, now) }),
      el("td", { class: "muted", text: d.reason || "" }),
    )), "No device has reported on this release yet."),
  );
}

export async function mountReleases(root, route, ctx) {
  const body = el("div", { class: "page" });
  root.append(el("div", { class: "page-head" }, el("h1", { text: "Releases" })), body);

  async function refresh() {
    let data;
    try {
      data = await api("/api/releases");
    } catch (err) {
      clear(body).append(el("p", { class: "error", text: err.message }));
      return;
    }
    const byModel = new Map();
    for (const r of data.releases) {
      if (!byModel.has(r.model_name)) byModel.set(r.model_name, []);
      byModel.get(r.model_name).push(r);
    }
    clear(body);
    if (!byModel.size) body.append(card(null, el("p", { class: "empty", text: "No release seen yet." })));
    if (!ctx.caps.release_actions) {
      body.append(el("p", { class: "notice", text: "Promote and roll back are off: the service runs without --release-signing-key." }));
    }
    for (const [model, releases] of byModel) {
      body.append(el("section", { class: "card", dataset: { model } },
        el("div", { class: "model-head" },
          el("h2", { text: model }),
          ctx.caps.release_actions ? rollbackControl(model, releases, ctx, refresh) : null),
        releases.map((r, i) => releaseBlock(r, i === 0, ctx, refresh))));
    }
  }

  await refresh();
  const live = throttle(refresh, 1000);
  return { refresh, onLive(kind) { if (kind === "releases") live(); } };
}
