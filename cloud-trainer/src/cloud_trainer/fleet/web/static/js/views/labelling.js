// The labelling queue: low-confidence frames from the cameras, labelled cat, dog or neither.
import { api } from "../api.js";
import { el, clear, when, badge, card } from "../dom.js";

const CHOICES = ["cat", "dog", "neither"];

export async function mountLabelling(root, route, ctx) {
  const stats = el("div", { class: "pills", id: "label-counts" });
  const grid = el("div", { class: "label-grid", style: "display:flex;flex-wrap:wrap;gap:12px" });
  root.append(
    el("div", { class: "page-head" }, el("h1", { text: "Labelling queue" }), stats),
    el("div", { class: "page" }, card(null, grid)),
  );

  async function label(sample, choice) {
    if (!(await ctx.requireLogin())) return;
    try {
      const done = await api(`/api/labelling/samples/${sample.id}`, { method: "POST", body: { label: choice } });
      ctx.toast(`Sample ${sample.id} labelled ${done.label} by ${done.labelled_by}`);
    } catch (err) {
      ctx.toast(`Labelling failed: ${err.message}`, "error");
    }
    refresh();
  }

  function tile(s) {
    return el("figure", { class: "label-tile", dataset: { sample: s.id }, style: "margin:0;width:220px" },
      el("img", { src: s.image_url, alt: `sample ${s.id}`, style: "width:220px;height:165px;object-fit:cover" }),
      el("figcaption", {},
        el("div", { class: "muted", text: `${s.device_id} · ${when(s.captured_at ?? s.received_at)}` }),
        el("div", {}, badge(`model said ${s.label ?? "?"}`, "muted"), " ", badge(s.reason ?? "captured", "warn")),
        el("div", { class: "inline" }, CHOICES.map((c) =>
          el("button", { type: "button", "data-acts": true, class: `label-${c}`, onclick: () => label(s, c), text: c })))));
  }

  async function refresh() {
    let data;
    try {
      data = await api("/api/labelling/queue?limit=60");
    } catch (err) {
      clear(grid).append(el("p", { class: "error", text: err.message }));
      return;
    }
    const c = data.counts;
    clear(stats).append(badge(`${c.pending} waiting`, c.pending ? "warn" : "good"),
      badge(`cat ${c.cat}`), badge(`dog ${c.dog}`), badge(`neither ${c.neither}`),
      badge(`${c.unused_for_training} not yet trained on`, "muted"));
    clear(grid);
    if (!data.samples.length) grid.append(el("p", { class: "empty", text: "No frame waits for a label." }));
    else grid.append(...data.samples.map(tile));
  }

  await refresh();
  return { refresh };
}
