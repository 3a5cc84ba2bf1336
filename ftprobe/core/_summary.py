"""A short look at a :class:`~ftprobe.core.results.Result`: ``repr``/``str`` in a terminal, ``_repr_html_`` in Jupyter.

Plain strings and the standard library only; the full renderings (rich tables, the HTML report) live in ``cli`` and
``report``. The summary shows what was compared and each metric's headline number per pair (or model) and layer:
the scalar named like the metric (``cka``), else its first mean (``overlap_mean@100``), else its first scalar.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import Result, Value

__all__ = ["format_number", "headline_rows", "summary_html", "summary_text"]

MAX_LAYERS = 8  # layer columns shown; more are elided in the middle
MAX_SUBJECTS = 6  # pairs (or models) shown per metric
MAX_ITEMS = 10  # names listed per line (models, layers, metrics)
HINT = ("more: result.records() (one row per number), result.to_pandas(), result.get(metric, layer, key), "
        "result.save('results.json')")


def format_number(x: float) -> str:
    """A number for a table cell: whole numbers bare, five decimals, scientific notation when very large or small."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    if abs(x) >= 1e4 or (abs(x) < 1e-3 and x != 0):
        return f"{x:.4e}"
    return f"{x:.5f}"


def _listed(names: list[str], limit: int = MAX_ITEMS) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit - 1]) + f", … (+{len(names) - limit + 1} more)"


def _headline_key(metric: str, values: list[Value]) -> str | None:
    keys: list[str] = []
    for v in values:
        keys += [k for k in v.scalars if k not in keys]
    if metric in keys:
        return metric
    return next((k for k in keys if "mean" in k), keys[0] if keys else None)


def _shown_layers(layers: list[str]) -> list[str | None]:
    """Layer columns, ``None`` marking the elided middle."""
    if len(layers) <= MAX_LAYERS:
        return list(layers)
    head = MAX_LAYERS - 2
    return [*layers[:head], None, layers[-1]]


def headline_rows(result: Result) -> list[tuple[str, str, list[str], int]]:
    """``(metric, key, [subject, value per shown layer ...] rows, hidden subjects)`` per metric with a headline.

    Each row is ``[subject, cell, cell, ...]`` aligned with :func:`_shown_layers` of the result's layers.
    """
    layers = [rec["name"] for rec in result.layers]
    shown = _shown_layers(layers)
    out = []
    for metric in result.metrics:
        vals = [v for v in result.values if v.metric == metric and v.layer != "*" and v.scalars]
        if not vals:
            continue
        scope = "pair" if any(v.scope == "pair" for v in vals) else "model"
        vals = [v for v in vals if v.scope == scope]
        key = _headline_key(metric, vals)
        if key is None:
            continue
        subjects: list[str] = []
        for v in vals:
            if v.subject not in subjects:
                subjects.append(v.subject)
        table = {(v.subject, v.layer): v.scalars.get(key) for v in vals}
        rows = []
        for subject in subjects[:MAX_SUBJECTS]:
            cells = [subject]
            for layer in shown:
                x = None if layer is None else table.get((subject, layer))
                cells.append("…" if layer is None else ("" if x is None else format_number(x)))
            rows.append(cells)
        out.append((metric, key, rows, max(len(subjects) - MAX_SUBJECTS, 0)))
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _counts(result: Result) -> str:
    n = result.run.get("samples")
    parts = [_n(len(result.models), "model"), _n(len(result.pairs), "pair"), _n(len(result.layers), "layer"),
             _n(len(result.metrics), "metric")]
    if result.data is not None:
        images = n if n is not None else result.data.get("num_samples")
        parts.append(f"{images} images" if images is None else _n(images, "image"))
    else:
        parts.append("weights only (no images)")
    return ", ".join(parts)


def _data_line(result: Result) -> str | None:
    d = result.data
    if not d:
        return None
    line = f"{result.run.get('samples', d.get('num_samples'))} images from {d.get('root') or d.get('kind')}"
    skipped = len(d.get("skipped_files", [])) or d.get("skipped", 0)
    if skipped:
        line += f" ({skipped} unreadable files skipped)"
    return line


def summary_text(result: Result) -> str:
    """A few lines: what was compared, the headline numbers, where to find the rest."""
    lines = [f"<ftprobe.Result: {_counts(result)}" + (", interrupted" if result.run.get("interrupted") else "")]
    lines.append(f"  models:   {_listed([str(m.get('label')) for m in result.models])}")
    if result.pairs:
        lines.append(f"  pairs:    {_listed([f'{a} → {b}' for a, b in result.pairs], 6)}")
    lines.append(f"  layers:   {_listed([rec['name'] for rec in result.layers])}")
    lines.append(f"  metrics:  {_listed(list(result.metrics))}")
    data = _data_line(result)
    if data:
        lines.append(f"  data:     {data}")
    for note in (result.data or {}).get("notes", []):
        lines.append(f"  note:     {note}")
    if result.skipped_metrics:
        lines.append(f"  skipped:  {_listed([s['metric'] for s in result.skipped_metrics])}")
    for w in result.warnings[:3]:
        lines.append(f"  warning:  {w}")
    if len(result.warnings) > 3:
        lines.append(f"  warning:  … (+{len(result.warnings) - 3} more in result.warnings)")
    heads = headline_rows(result)
    if heads:
        shown = ["…" if name is None else name for name in _shown_layers([rec["name"] for rec in result.layers])]
        width = max(len(r[0]) for _, _, rows, _ in heads for r in rows)
        lines.append("  headline numbers per layer:")
        for metric, key, rows, hidden in heads:
            cols = [max(len(name), *(len(r[i + 1]) for r in rows)) for i, name in enumerate(shown)]
            lines.append(f"    {metric}" + ("" if key == metric else f" [{key}]"))
            lines.append(f"      {'':<{width}}  " + "  ".join(f"{n:>{c}}" for n, c in zip(shown, cols)))
            for r in rows:
                lines.append(f"      {r[0]:<{width}}  " + "  ".join(f"{x:>{c}}" for x, c in zip(r[1:], cols)))
            if hidden:
                lines.append(f"      … (+{hidden} more)")
    lines.append(f"  {HINT}>")
    return "\n".join(lines)


def summary_html(result: Result) -> str:
    """The same summary as an HTML fragment for notebooks: a caption and one table of headline numbers."""
    e = escape
    shown = _shown_layers([rec["name"] for rec in result.layers])
    info = [f"<b>ftprobe.Result</b>: {e(_counts(result))}"]
    info.append(f"models: {e(_listed([str(m.get('label')) for m in result.models]))}")
    data = _data_line(result)
    if data:
        info.append(f"data: {e(data)}")
    info += [f"note: {e(n)}" for n in (result.data or {}).get("notes", [])]
    info += [f"<span style='color:#b45309'>warning: {e(w)}</span>" for w in result.warnings[:3]]
    if result.skipped_metrics:
        info.append(f"skipped: {e(_listed([s['metric'] for s in result.skipped_metrics]))}")
    parts = ["<div class='ftprobe-result'>", "<p>" + "<br>".join(info) + "</p>"]
    heads = headline_rows(result)
    if heads:
        head = "".join(f"<th>{'…' if n is None else e(n)}</th>" for n in shown)
        parts.append(f"<table><thead><tr><th>metric</th><th>pair / model</th>{head}</tr></thead><tbody>")
        for metric, key, rows, hidden in heads:
            title = e(metric) if key == metric else f"{e(metric)} <small>[{e(key)}]</small>"
            span = len(rows) + bool(hidden)
            for i, r in enumerate(rows):
                first = f"<th rowspan='{span}' style='text-align:left'>{title}</th>" if i == 0 else ""
                cells = "".join(f"<td style='text-align:right'>{e(x)}</td>" for x in r[1:])
                parts.append(f"<tr>{first}<td style='text-align:left'>{e(r[0])}</td>{cells}</tr>")
            if hidden:
                parts.append(f"<tr><td colspan='{len(shown) + 1}'>… (+{hidden} more)</td></tr>")
        parts.append("</tbody></table>")
    parts.append(f"<p><small>{e(HINT)}</small></p></div>")
    return "\n".join(parts)
