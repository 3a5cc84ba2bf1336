"""Result → rich tables. Reads results only; the numbers come from :class:`ftprobe.Result` unchanged."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ftprobe.core.results import Result, Value

__all__ = ["fmt", "metric_tables", "summary_lines"]


def fmt(x: float) -> str:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    if abs(x) >= 1e4 or (abs(x) < 1e-3 and x != 0):
        return f"{x:.4e}"
    return f"{x:.5f}"


def _keys(values: Iterable[Value]) -> list[str]:
    keys: list[str] = []
    for v in values:
        for k in v.scalars:
            if k not in keys:
                keys.append(k)
    return keys


def metric_tables(result: Result) -> list[Any]:
    """One table per metric (and scope): a row per (subject, layer), a column per scalar key."""
    from rich.table import Table

    tables = []
    layer_order = {rec["name"]: i for i, rec in enumerate(result.layers)}
    typed = {rec["name"]: rec["spec"] for rec in result.layers}
    for metric in result.metrics:
        for scope in ("pair", "model"):
            vals = [v for v in result.values if v.metric == metric and v.scope == scope and v.scalars]
            if not vals:
                continue
            vals.sort(key=lambda v: (v.subject, layer_order.get(v.layer, len(layer_order))))
            keys = _keys(vals)
            title = f"{metric} ({'per pair' if scope == 'pair' else 'per model'})"
            notes = [f"note ({'; '.join(places)}): {note}" for note, places in result.notes(metric, scope)]
            table = Table(title=title, title_justify="left", caption="\n".join(notes) or None,
                          caption_justify="left", caption_style="yellow")  # the values' cautions, under them
            table.add_column("pair" if scope == "pair" else "model")
            table.add_column("layer")
            for k in keys:
                table.add_column(k, justify="right")
            for v in vals:
                shown = v.layer if typed.get(v.layer, v.layer) == v.layer else f"{v.layer} ({typed[v.layer]})"
                table.add_row(v.subject, shown, *[fmt(v.scalars[k]) if k in v.scalars else "" for k in keys])
            tables.append(table)
    return tables


def summary_lines(result: Result) -> list[str]:
    lines = []
    run = result.run
    if result.data:
        lines.append(f"{run.get('samples', 0)} samples from {result.data.get('root') or result.data.get('kind')}"
                     + (f", {len(result.data.get('skipped_files', []))} unreadable files skipped"
                        if result.data.get("skipped_files") else ""))
    for s in result.skipped_metrics:
        lines.append(f"skipped: {s['reason']}")
    return lines
