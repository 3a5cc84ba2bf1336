"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG, no script, no network).

Figures are drawn no wider than the page's content box, so the page shows them at their own size. The top-image
grids are laid out in the page itself: each image is embedded once, as a thumbnail in a CSS class, however many
cells show it.

Every name that comes from the user's data or command line (files, classes, layers, model labels, options, summary
sentences) goes through :func:`html.escape`; only ``extra_sections`` fragments, which callers mark as trusted, are
inserted as they are. A Content-Security-Policy forbids scripts and every fetch except ``data:`` images.
"""

from __future__ import annotations

import base64
import fnmatch
import json
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ftprobe.core.results import Result, Value

from ._access import (
    MetricValues,
    control_pairs,
    fmt,
    layer_label,
    layer_order,
    report_metrics,
    resampling_line,
    with_interval,
)
from .figures import Figure
from .grids import GRID_CSS, Thumbnails, grid_html
from .headline import findings_html, headline_sentences

__all__ = ["ExtraSection", "build_html", "context_sentences", "headline_tables", "metric_sentences",
           "scalar_tables", "summary_sentences"]

ExtraSection = tuple[str, str, Sequence[str | Path]]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; base-uri 'none'"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:8px 24px 48px}
header{background:#23395b;color:#fff;padding:18px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}nav{margin-top:10px}nav a{color:#cfe0ff;margin-right:14px;font-size:13px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:18px 0;padding:6px 18px 14px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12px;margin:6px 0 12px}th,td{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top;max-width:480px}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}th{background:#f1f3f6}
code{font-size:12px;word-break:break-all}.muted{color:#666;font-size:12px}ul.summary li{margin:3px 0}
.warn{color:#8a4b00}td.hash{font:11px monospace;word-break:break-all;min-width:150px;max-width:200px}
td.long{word-break:break-all;max-width:260px}
section.headline{background:#fff4cc;border-color:#e8c65a}section.headline h2{border-bottom-color:#ecd48a}
ul.headline{margin:6px 0 8px;padding-left:20px}ul.headline li{margin:4px 0;font-size:15px}
p.context{margin:4px 0 8px}p.findings-head{margin:10px 0 2px;font-weight:600}
ul.findings{list-style:none;margin:2px 0 6px;padding-left:0}ul.findings li{margin:3px 0}
.verdict{display:inline-block;min-width:140px;font-size:12px;font-weight:600}.verdict.holds{color:#1d6b2f}
.verdict.fails{color:#a2361b}.verdict.unknown{color:#666}.why{color:#555}
details{margin:6px 0 10px}details>summary{cursor:pointer;color:#23395b;font-size:13px}
figure img{border-color:#c9d3e3}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _figure(fig: Figure) -> str:
    cap = escape(fig.title) + (f" — {escape(fig.caption)}" if fig.caption else "")
    if fig.section == "grids":
        cap = ""  # the grid's own rows say why each channel is there
    return f"<figure>{_img(fig.path, fig.title)}" + (f"<figcaption>{cap}</figcaption>" if cap else "") + "</figure>"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 99,
           classes: dict[int, str] | None = None) -> str:
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th>{escape(str(h))}</th>" for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, x in enumerate(row):
            name = "n" if i >= numeric_from else (classes or {}).get(i)
            cls = f' class="{name}"' if name else ""
            cells.append(f"<td{cls}>{escape(x if isinstance(x, str) else fmt(x))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _jsonish(x: Any) -> str:
    return x if isinstance(x, str) else json.dumps(x, ensure_ascii=False, default=str)


def _kv(d: dict[str, Any]) -> str:
    return _table(["key", "value"], [(str(k), fmt(v) if isinstance(v, float) else _jsonish(v)) for k, v in d.items()])


#: A scalar ``K_shuffled`` beside a headline key ``K`` is ``K``'s chance level: the images of the two models paired
#: at random (a convention of value keys, whatever the metric).
CHANCE_SUFFIX = "_shuffled"


def headline_tables(result: Result, metric: str) -> str:
    """The metric's headline scalars side by side: per key, a table with a row per layer and a column per pair (or
    model), with intervals when the run made them; then the controls of the key when the run has any (its chance
    level ``K_shuffled``, the random-init pair, the seed pairs), labelled as controls."""
    values = MetricValues(result, metric, Path())
    labels = control_pairs(result)
    subjects = {**{f"{b} → {t}": d for (b, t), d in values.pairs().items()}, **values.models()}
    controls = {f"{b} → {t}": text for (b, t), text in labels.items()}
    parts = []
    for key in values.headline_keys():
        cols = {s: d for s, d in subjects.items() if any(key in v.scalars for n, v in d.items() if n != "*")}
        if not cols:
            continue
        layers = [n for n in layer_order(result) if any(n in d and key in d[n].scalars for d in cols.values())]
        unit = values.unit(key)
        name = values.value_name(key)
        rows = [(layer_label(result, n), *[with_interval(d[n], key) if n in d and key in d[n].scalars else ""
                                            for d in cols.values()]) for n in layers]
        parts.append(f'<p class="muted">{escape(name)}' + (f" ({escape(unit)})" if unit else "")
                     + f" per layer — <code>{escape(key)}</code></p>")
        heads = [s + (f" ({controls[s]})" if s in controls else "") for s in cols]
        parts.append(_table(["layer", *heads], rows, numeric_from=1))
        parts.append(_controls_table(result, key, name, layers, cols, controls))
    line = resampling_line(result) if any(v.intervals for v in values.values) else ""
    if parts and line:
        parts.append(f'<p class="muted">{escape(line)} The interval is in brackets after each value.</p>')
    return "".join(parts)


def _controls_table(result: Result, key: str, name: str, layers: Sequence[str], cols: dict[str, dict[str, Value]],
                    controls: dict[str, str]) -> str:
    """The first compared subject's ``key`` beside its controls, a row per layer (empty when there are none)."""
    first = next((s for s in cols if s not in controls), None)
    chance = key + CHANCE_SUFFIX
    heads: list[str] = []
    getters = []
    if first is not None:
        heads.append(f"{name}, {first}")
        getters.append((cols[first], key))
        if any(chance in v.scalars for v in cols[first].values()):
            heads.append(f"control: chance level, images paired at random ({chance}), {first}")
            getters.append((cols[first], chance))
    for s, text in controls.items():
        if s in cols:
            heads.append(f"{text}: {name}, {s}")
            getters.append((cols[s], key))
    if len(heads) < 2:
        return ""
    rows = [(layer_label(result, n), *[with_interval(d[n], k) if n in d and k in d[n].scalars else ""
                                       for d, k in getters]) for n in layers]
    return (f'<p class="muted">{escape(name)} beside its controls: what the same measure gives where there is '
            "nothing to find</p>" + _table(["layer", *heads], rows, numeric_from=1))


def scalar_tables(result: Result, metric: str) -> str:
    """The scalars of one metric: a table per scope, a row per (subject, layer), a column per key."""
    order = {n: i for i, n in enumerate(layer_order(result))}
    subjects = [f"{b} → {t}" for b, t in result.pairs] + [str(m.get("label")) for m in result.models]
    rank = {s: i for i, s in enumerate(subjects)}
    parts = []
    for scope in ("pair", "model"):
        vals: list[Value] = [v for v in result.values if v.metric == metric and v.scope == scope and v.scalars
                             and v.layer != "*"]
        if not vals:
            continue
        vals.sort(key=lambda v: (rank.get(v.subject, len(rank)), v.subject, order.get(v.layer, len(order))))
        keys: list[str] = []
        for v in vals:
            keys.extend(k for k in v.scalars if k not in keys)
        rows = [(v.subject, layer_label(result, v.layer), *[with_interval(v, k) if k in v.scalars else ""
                                                             for k in keys]) for v in vals]
        what = "pair" if scope == "pair" else "model"
        parts.append(f"<details><summary>Every value per {what} and layer ({len(rows)} rows, {len(keys)} "
                     f"value{'' if len(keys) == 1 else 's'})</summary>")
        parts.append(_table([what, "layer", *keys], rows, numeric_from=2) + "</details>")
        parts.extend(f'<p class="warn">note ({escape("; ".join(places))}): {escape(note)}</p>'
                     for note, places in result.notes(metric, scope))  # the values' cautions, under them
    shared: dict[str, list[str]] = {}  # values that belong to no single layer: one line per distinct text
    for v in result.values:
        if v.metric != metric or v.layer != "*":
            continue
        items = [f"{k} = {fmt(x)}" for k, x in v.scalars.items()]
        items += [f"{k} = {x}" for k, x in v.arrays.items() if isinstance(x, (str, int, float, bool))]
        if items:
            shared.setdefault("; ".join(items), []).append(v.subject)
    for text, who in shared.items():
        parts.append(f'<p class="muted">{escape(", ".join(who))}, all layers: {escape(text)}</p>')
    return "".join(parts)


def context_sentences(result: Result) -> list[str]:
    """What was compared: the models, pairs and layers, and the images."""
    out = []
    models = ", ".join(str(m.get("label")) for m in result.models)
    pairs = len(result.pairs)
    out.append(f"Models: {models}; {pairs} pair{'' if pairs == 1 else 's'}; layers: "
               + ", ".join(layer_label(result, n) for n in layer_order(result)) + ".")
    if result.data:
        d = result.data
        out.append(f"{result.run.get('samples', d.get('num_samples'))} images from {d.get('root') or d.get('kind')}"
                   + (f" ({d.get('skipped')} unreadable files skipped)" if d.get("skipped") else "") + ".")
    return out


def summary_sentences(result: Result) -> list[str]:
    """Plain sentences (not HTML) that state what was compared and where the changes are largest."""
    out = context_sentences(result)
    for metric in report_metrics(result):
        out.extend(metric_sentences(MetricValues(result, metric, Path())))
    return out


def _number(x: float, unit: str) -> str:
    """A value in a sentence: a percentage to one decimal; other units are named on the figures' axes."""
    return f"{x:.1f}%" if unit == "%" else fmt(x)


def metric_sentences(values: MetricValues) -> list[str]:
    """One sentence per subject (pair or model) and headline key: where the metric says the models differ most, by
    its declared direction (``higher_is_more_similar``: the lowest value, or the largest), or the range across layers
    of a value with no direction. Keys of one headline glob (``overlap_mean@*``: one per k) share the sentence (with
    no direction: the first key, the smallest k)."""
    out = []
    subjects = {**{f"{b} → {t}": d for (b, t), d in values.pairs().items()}, **values.models()}
    keys = values.headline_keys()
    groups: dict[str, list[str]] = {}
    for pat in values.declared["headline"]:
        groups[pat] = [k for k in keys if k not in {x for g in groups.values() for x in g}
                       and fnmatch.fnmatchcase(k, pat)]
    for subject, by_layer in subjects.items():
        for group in groups.values():
            pts = [(v.scalars[k], k, n) for n, v in by_layer.items() for k in group
                   if n != "*" and k in v.scalars and v.scalars[k] == v.scalars[k]]
            if not pts:
                continue
            direction = values.direction
            if direction is None:  # no better or worse: the range across layers of the group's first key
                first = [p for p in pts if p[1] == group[0]] or [p for p in pts if p[1] == min(p[1] for p in pts)]
                (lo, k, n_lo), (hi, _, n_hi) = min(first), max(first)
                unit = values.unit(k)
                out.append(f"{subject}: {values.value_name(k)} from {_number(lo, unit)} at "
                           f"{layer_label(values.result, n_lo)} to {_number(hi, unit)} at "
                           f"{layer_label(values.result, n_hi)}.")
                continue
            x, k, n = min(pts) if direction else max(pts)
            out.append(f"{subject}: {'lowest' if direction else 'largest'} {values.value_name(k)} at "
                       f"{layer_label(values.result, n)} ({_number(x, values.unit(k))}).")
    return out


def _provenance(result: Result) -> str:
    parts = ['<section id="provenance"><h2>Provenance</h2>']
    run = dict(result.run)
    versions = run.pop("versions", {}) or {}
    parts.append("<h3>Run</h3>" + _kv({**{f"{k} version": v for k, v in versions.items()}, **run}))
    parts.append("<h3>Models</h3>")
    parts.append(_table(["label", "source", "kind", "arch", "sha256", "head", "notes"], [
        (str(m.get("label")), str(m.get("source")), str(m.get("kind")), _jsonish(m.get("arch")),
         str(m.get("sha256") or "—"), _jsonish(m.get("head")), "; ".join(m.get("notes") or []))
        for m in result.models], classes={1: "long", 4: "hash"}))
    parts.append("<h3>Layers (how each name was resolved)</h3>")
    parts.append(_table(["as given", "module", "via alias", "output shape", "layout", "per model"], [
        (str(r.get("spec")), str(r.get("name")), "yes" if r.get("alias") else "no",
         "×".join(map(str, r.get("shape") or [])), str(r.get("layout", "")), _jsonish(r.get("per_model", "")))
        for r in result.layers]))
    if result.data:
        data = {k: v for k, v in result.data.items() if k not in ("index_paths", "index_labels", "skipped_files")}
        data["files referenced by top-k images"] = len(result.data.get("index_paths") or {})
        parts.append("<h3>Data</h3>" + _kv(data))
        skipped = result.data.get("skipped_files") or []
        if skipped:
            parts.append(f"<h3>Skipped files ({len(skipped)})</h3>")
            rows = [(str(s.get("path")), str(s.get("reason"))) for s in skipped[:200]]
            parts.append(_table(["file", "reason"], rows))
            if len(skipped) > 200:
                parts.append(f'<p class="muted">… and {len(skipped) - 200} more (see results.json).</p>')
    parts.append("<h3>Metrics and options</h3>")
    parts.append(_table(["metric", "provider", "version", "needs", "scope", "options", "notes"], [
        (name, str(m.get("provider")), str(m.get("version")), str(m.get("needs", "")), str(m.get("scope", "")),
         _jsonish(m.get("options", {})), "; ".join(m.get("notes") or [])) for name, m in result.metrics.items()]))
    for s in result.skipped_metrics:
        parts.append(f'<p class="warn">skipped {escape(str(s.get("metric")))}: {escape(str(s.get("reason")))}</p>')
    parts.append("</section>")
    return "".join(parts)


#: Caller sentences shown open under the headline; more go into a collapsed list (and all into the summary).
_OPEN_LINES = 3
_CLASSES = {"headline": ' class="headline"'}


def _headline(result: Result, given: Sequence[str]) -> str:
    """The page's first section: what changed most, what was compared, the stored findings one line each, the
    caller's sentences (a few shown, more collapsed) and the run's warnings."""
    lines = headline_sentences(result)
    body = ('<ul class="headline">' + "".join(f"<li>{escape(s)}</li>" for s in lines) + "</ul>") if lines else ""
    if given and len(given) <= _OPEN_LINES:
        body += "".join(f"<p>{escape(s)}</p>" for s in given)
    context = [*context_sentences(result), resampling_line(result)]
    body += f'<p class="context muted">{escape(" ".join(c for c in context if c))}</p>'
    body += findings_html(result)
    if len(given) > _OPEN_LINES:
        body += (f"<details><summary>The run's own summary ({len(given)} sentences)</summary><ul class=\"summary\">"
                 + "".join(f"<li>{escape(s)}</li>" for s in given) + "</ul></details>")
    body += "".join(f'<p class="warn">warning: {escape(w)}</p>' for w in result.warnings)
    return body


def build_html(
    result: Result,
    figures: Sequence[Figure],
    *,
    summary_lines: Sequence[str] | None = None,
    extra_sections: Sequence[ExtraSection] | None = None,
) -> str:
    """The whole report page as a string (figures read from their PNG files and embedded)."""
    by_section: dict[str, list[Figure]] = {}
    for f in figures:
        by_section.setdefault(f.section, []).append(f)
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)
    given = [str(x) for x in summary_lines or []]
    sections.append(("headline", "What changed most", _headline(result, given)))
    for i, metric in enumerate(result.metrics, start=1):
        declared = MetricValues(result, metric, Path()).declared
        title = str(declared["title"])
        opts = _jsonish(result.metrics[metric].get("options", {}))
        body = f'<p class="muted">{escape(str(declared["description"]))}</p>' if declared["description"] else ""
        body += "".join(_figure(f) for f in by_section.get(metric, []))
        body += headline_tables(result, metric)
        body += scalar_tables(result, metric)
        body += f'<p class="muted">options: <code>{escape(opts)}</code></p>'
        sections.append((f"metric-{i}", title, body))
    thumbs = Thumbnails()
    if by_section.get("grids"):
        body = ('<p class="muted">Each channel: its top images in the base model (first row) and the tuned model '
                "(second row), best first; an orange frame marks an image that is in both top-k sets; the class is "
                "under each image.</p>")
        body += "".join(f"<h3>{escape(f.title)}</h3>" + (grid_html(result, f.grid, thumbs) if f.grid else _figure(f))
                        for f in by_section["grids"])
        sections.append(("grids", "Top images per channel", body))
    for j, (title, fragment, pngs) in enumerate(extra_sections or [], start=1):
        body = str(fragment) + "".join(f"<figure>{_img(Path(p), Path(p).name)}</figure>" for p in pngs)
        sections.append((f"extra-{j}", str(title), body))
    lines = [*given, *summary_sentences(result)]
    body = (f"<details><summary>Every summary sentence ({len(lines)})</summary>"
            '<ul class="summary">' + "".join(f"<li>{escape(s)}</li>" for s in lines) + "</ul></details>")
    sections.append(("summary", "Summary", body))
    pairs = "; ".join(f"{b} → {t}" for b, t in result.pairs)
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections) + '<a href="#provenance">Provenance</a>'
    version = (result.run.get("versions") or {}).get("ftprobe", "?")
    html = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ftprobe report: {escape(pairs)}</title><style>{_CSS}{GRID_CSS}{thumbs.css()}</style></head><body>",
        f"<header><h1>What fine-tuning changed: {escape(pairs)}</h1>",
        f"<p>ftprobe {escape(str(version))} · results.json schema version {result.schema_version}</p>",
        f"<nav>{nav}</nav></header><main>",
        *(f'<section id="{a}"{_CLASSES.get(a, "")}><h2>{escape(t)}</h2>{b}</section>' for a, t, b in sections),
        _provenance(result),
        "</main></body></html>",
    ]
    return "\n".join(html)
