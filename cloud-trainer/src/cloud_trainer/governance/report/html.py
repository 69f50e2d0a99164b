"""The report as one HTML file: inline CSS, images as data URIs, its facts embedded as JSON."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from cloud_trainer.governance.report.collect import ReportFacts
from cloud_trainer.governance.slices import SliceReport

FACTS_ELEMENT_ID = "report-facts"

CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#1d2430;margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0}
h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-size:13px}
th,td{border:1px solid #d5d9e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv th{width:210px}.muted{color:#667085}.warn{background:#fff4e5}.bad{color:#b42318}
.ok{color:#067647}.bar{display:inline-block;height:9px;background:#3b6fd8;vertical-align:middle}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots figure{margin:0}
.plots img{max-width:340px;border:1px solid #d5d9e0;background:#fff}
.warning{background:#fff4e5;border-left:4px solid #f79009;padding:4px 8px;margin:4px 0}
code{font-size:12px}
@media print{body{background:#fff}main{padding:0}}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _ts(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e12:
            return str(int(value))
        return f"{value:.{digits}f}"
    return _e(value)


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], row_class: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    classes = list(row_class)
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        cells = "".join(
            f'<td class="num">{_num(c)}</td>' if isinstance(c, int | float) else f"<td>{c}</td>"
            for c in row
        )
        body.append(f"<tr{css}>{cells}</tr>")
    if not body:
        return '<p class="muted">none recorded</p>'
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def _img(images: dict[str, bytes], path: str) -> str:
    data = images.get(path)
    if data is None:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    caption = f'<figcaption class="muted">{_e(path)}</figcaption>'
    return f'<figure><img src="{uri}" alt="{_e(path)}">{caption}</figure>'


def _lineage(f: ReportFacts) -> str:
    r = f.registry
    pairs: list[tuple[str, Any]] = [
        ("data version", f"<code>{_e(r.data_version)}</code>"),
        ("ONNX sha256", f"<code>{_e(r.onnx_sha256)}</code>"),
        ("code commit", f"<code>{_e(r.git_commit)}</code>"),
        ("experiment / run", f"{_e(r.experiment)} / <code>{_e(r.run_id)}</code>"),
        ("trained by", _e(r.run_user)),
        ("run started", _e(r.started_at)),
        ("run ended", _e(r.ended_at)),
        ("run open for", "" if r.training_seconds is None else f"{r.training_seconds:.1f} s"),
        ("registered", _e(r.registered_at)),
        ("aliases", _e(", ".join(r.aliases) or "none")),
    ]
    pairs += [(k, _e(v)) for k, v in sorted(r.trigger_tags.items())]
    out = _kv(pairs)
    if f.data_report:
        scalars = [(k, _e(v)) for k, v in f.data_report.items() if isinstance(v, str | int | float)]
        out += "<h3>Data checks</h3>" + _kv(scalars)
    params = sorted(r.params.items())
    out += "<h3>Parameters</h3>" + _table(
        ["parameter", "value"], [(_e(k), _e(v)) for k, v in params]
    )
    return out


def _evaluation(f: ReportFacts, images: dict[str, bytes]) -> str:
    metrics = sorted(f.registry.metrics.items())
    out = _table(["metric", "value"], [(_e(k), v) for k, v in metrics])
    ev = f.evaluation or {}
    matrix = ev.get("confusion_matrix")
    labels = (
        ev.get("labels")
        or list(ev.get("per_class") or {})
        or [str(i) for i in range(len(matrix or []))]
    )
    if matrix:
        out += "<h3>Confusion matrix (rows: observed, columns: predicted)</h3>"
        out += _table(["", *labels], [(_e(labels[i]), *row) for i, row in enumerate(matrix)])
    plots = [p for p in f.plots if p in images]
    if plots:
        out += '<div class="plots">' + "".join(_img(images, p) for p in plots) + "</div>"
    return out


def _gate(f: ReportFacts) -> str:
    g = f.registry.gate
    verdict = {True: '<b class="ok">promote</b>', False: '<b class="bad">do not promote</b>'}
    pairs: list[tuple[str, Any]] = [
        ("decision", "no gate decision recorded" if g.promote is None else verdict[g.promote]),
        ("decided at", _e(g.decided)),
        ("decided by", _e(g.decided_by)),
        ("primary metric", _e(g.primary_metric)),
        ("candidate", _e(g.candidate)),
        ("baseline", _e(g.baseline)),
        ("champion then", _e(g.champion)),
        ("split", _e(g.split)),
    ]
    out = _kv(pairs) + "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in g.reasons) + "</ul>"
    if f.registry.release_tags:
        out += "<h3>Release record in the registry</h3>"
        out += _kv([(k, _e(v)) for k, v in sorted(f.registry.release_tags.items())])
    return out


def _bar(value: float, peak: float) -> str:
    width = 0 if peak <= 0 else max(0, round(160 * value / peak))
    return f'<span class="bar" style="width:{width}px"></span>'


def _explanations(f: ReportFacts, images: dict[str, bytes]) -> str:
    a = f.analysis
    if a is None:
        return (
            '<p class="muted">not analysed: run <code>cloud-trainer governance analyse</code></p>'
        )
    out = (
        f'<p class="muted">computed on {_e(a.n_rows)} test rows of {_e(a.data_source)} '
        f"(data version {_e(a.data_version)}), seed {a.seed}, in {a.seconds:.1f} s</p>"
    )
    if a.importance is not None:
        imp = a.importance
        peak = max((x.mean_drop for x in imp.features), default=0.0)
        out += (
            f"<h3>Permutation importance (fall in {_e(imp.metric)} from "
            f"{imp.baseline_score:.4f}, {imp.repeats} shuffles)</h3>"
        )
        out += _table(
            ["rank", "feature", "mean drop", "std", ""],
            [
                (x.rank, _e(x.feature), x.mean_drop, x.std_drop, _bar(x.mean_drop, peak))
                for x in imp.features
            ],
        )
    if a.importance_change:
        out += f"<h3>Change of importance since v{a.previous_version}</h3>"
        out += _table(
            [
                "feature",
                f"v{a.previous_version}",
                f"v{a.version}",
                "change",
                "rank before",
                "rank now",
            ],
            [
                (_e(c.feature), c.before, c.after, c.change, c.rank_before, c.rank_after)
                for c in a.importance_change[:12]
            ],
        )
    if a.local_example is not None:
        ex = a.local_example
        out += f"<h3>One forecast explained ({_e(a.local_example_hour)})</h3>"
        out += (
            f"<p>P({_e(ex.positive_label)}) = {ex.probability:.3f} → {_e(ex.decision)} "
            f"(threshold {ex.threshold:.2f}); with every feature at its training mean: "
            f"{ex.baseline_probability:.3f}. Each row: how the probability moves when that one "
            "feature is set to its training mean (the model is not additive, so rows need not "
            "sum).</p>"
        )
        out += _table(
            ["feature", "value", "training mean", "contribution"],
            [(_e(c.feature), c.value, c.baseline, c.contribution) for c in ex.contributions[:10]],
        )
    if a.saliency:
        out += (
            "<h3>Occlusion saliency on test frames (left: frame, right: where hiding a patch "
            "lowers the decision most)</h3>"
        )
        out += '<div class="plots">'
        for s in a.saliency:
            out += (
                _img(images, s.artifact)
                + f'<p class="muted">{_e(s.file)}: true {_e(s.true_label)}, '
                + f"predicted {_e(s.predicted)} ({s.probability:.3f})</p>"
            )
        out += "</div>"
    return out


def _slices(report: SliceReport | None, title: str) -> str:
    if report is None:
        return ""
    out = f"<h3>{_e(title)} (margin {report.margin:.0%}, flagged from n ≥ {report.min_rows})</h3>"
    out += "".join(f'<div class="warning">{_e(w)}</div>' for w in report.warnings)
    rows = [(_e(s.kind), _e(s.name), s.n, _e(s.metric), s.value, s.whole) for s in report.slices]
    return out + _table(
        ["slice", "name", "n", "metric", "value", "whole"],
        rows,
        ["warn" if s.warning else "" for s in report.slices],
    )


def _rollout(f: ReportFacts) -> str:
    fleet = f.fleet
    if fleet is None:
        return '<p class="muted">no fleet store given (<code>--fleet-db</code>)</p>'
    out = f'<p class="muted">from {_e(f.fleet_source)}</p>'
    out += _table(
        [
            "release",
            "published",
            "publisher",
            "channel",
            "wave",
            "percent",
            "groups",
            "device outcomes",
        ],
        [
            (
                _e(r.release_id),
                _ts(r.created),
                _e(r.publisher),
                _e(r.channel),
                r.wave,
                r.percent,
                _e(", ".join(r.groups)),
                _e(", ".join(f"{k} {v}" for k, v in sorted(Counter(r.outcomes.values()).items()))),
            )
            for r in fleet.releases
        ],
    )
    out += "<h3>Device rollbacks</h3>" + _table(
        ["device", "time", "release", "reason"],
        [(_e(u.device_id), _ts(u.ts), _e(u.release_id), _e(u.reason)) for u in fleet.rollbacks],
    )
    out += "<h3>Fleet rollbacks away from this version</h3>" + _table(
        ["release", "published", "to version", "publisher"],
        [
            (_e(r.release_id), _ts(r.created), r.version, _e(r.publisher))
            for r in fleet.fleet_rollbacks
        ],
    )
    out += (
        f"<p>Devices running this version now: {_e(', '.join(fleet.devices_running) or 'none')}</p>"
    )
    out += "<h3>Update events</h3>" + _table(
        ["device", "time", "release", "from", "to", "state", "reason"],
        [
            (
                _e(u.device_id),
                _ts(u.ts),
                _e(u.release_id),
                _e(u.from_version),
                u.to_version,
                _e(u.state),
                _e(u.reason),
            )
            for u in fleet.updates
        ],
    )
    return out


def _drift(f: ReportFacts) -> str:
    if f.fleet is None:
        return ""
    out = _table(
        ["alert", "device", "time", "state", "detector", "severity", "summary", "actions"],
        [
            (
                a.alert_id,
                _e(a.device_id),
                _ts(a.ts),
                _e(a.state),
                _e(a.detector),
                _e(a.severity),
                _e(a.summary),
                _e("; ".join(f"{x['action']} {x['status']} ({x['rule']})" for x in a.actions)),
            )
            for a in f.fleet.alerts
        ],
    )
    if f.alert_importance:
        out += "<h3>Drifting features and how much the model relies on them</h3>"
        out += _table(
            ["alert", "feature", "metric", "score", "threshold", "importance rank", "importance"],
            [
                (
                    x.alert_id,
                    _e(x.feature),
                    _e(x.metric),
                    x.score,
                    x.threshold,
                    "not a model input"
                    if x.importance_rank is None
                    else f"{x.importance_rank} of {x.n_features}",
                    "" if x.importance is None else f"{x.importance:.4f}",
                )
                for x in f.alert_importance
            ],
        )
    return out


def facts_json(facts: ReportFacts) -> str:
    """The facts as JSON that is safe inside a ``<script type="application/json">`` element."""
    text = json.dumps(facts.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(facts: ReportFacts, images: dict[str, bytes]) -> str:
    r = facts.registry
    title = f"{r.model_name} v{r.version}: model audit report"
    sections = [
        ("Lineage", _lineage(facts)),
        ("Evaluation", _evaluation(facts, images)),
        ("Gate decision and promotion", _gate(facts)),
        ("Explanations", _explanations(facts, images)),
        (
            "Slices and bias",
            (
                _slices(facts.analysis.slices if facts.analysis else None, "Test set slices")
                + _slices(facts.production, "Production slices (fleet prediction summaries)")
            )
            or '<p class="muted">not analysed</p>',
        ),
        ("Rollout history", _rollout(facts)),
        (
            "Drift alerts and actions taken",
            _drift(facts) or '<p class="muted">no fleet store given</p>',
        ),
    ]
    body = "".join(f"<section><h2>{_e(name)}</h2>{html}</section>" for name, html in sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="muted">generated {_e(facts.generated_at)} from the '
        "MLflow registry and the fleet store; every figure below is read from them.</p>"
        f"{body}"
        f'<script type="application/json" id="{FACTS_ELEMENT_ID}">{facts_json(facts)}</script>'
        "</main></body></html>"
    )
