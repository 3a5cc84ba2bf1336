"""Result → rich tables. Reads results only; the numbers come from :class:`ftprobe.Result` unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ftprobe.core._summary import format_number as fmt
from ftprobe.core.results import Result, Value

__all__ = ["fmt", "metric_tables", "summary_lines"]


def _keys(values: Iterable[Value]) -> list[str]:
    keys: list[str] = []
    for v in values:
        for k in v.scalars:
            if k not in keys:
                keys.append(k)
    return keys


_AT = re.compile(r"^(?P<key>.+)@(?P<k>[^@]+)$")


def _split_at(keys: list[str]) -> tuple[list[str], list[str], list[str]] | None:
    """Keys like ``overlap_mean@100``, ``overlap_mean@1000`` with two or more ``@`` values → (plain keys, base keys,
    k values), so a table gets a ``k`` column instead of one column per key and k; ``None`` otherwise."""
    plain, base, ks = [], [], []
    for key in keys:
        m = _AT.match(key)
        if m is None:
            plain.append(key)
            continue
        if m["key"] not in base:
            base.append(m["key"])
        if m["k"] not in ks:
            ks.append(m["k"])
    return (plain, base, ks) if len(ks) > 1 else None


def _cell(v: Any, key: str) -> str:
    """A value, with its interval when it has one: ``0.931 [0.912, 0.950]``."""
    iv = v.intervals.get(key)
    if iv is None or not isinstance(iv.get("lo"), float) or iv["lo"] != iv["lo"]:
        return fmt(v.scalars[key])
    return f"{fmt(v.scalars[key])} [{fmt(iv['lo'])}, {fmt(iv['hi'])}]"


def metric_tables(result: Result) -> list[Any]:
    """One table per metric (and scope): a row per (subject, layer), a column per scalar key. Keys measured at several
    top-k sizes (``overlap_mean@100`` ...) get a row per k and a ``k`` column, so headers stay whole; a column that
    does not fit folds onto more lines rather than being cut."""
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
            split = _split_at(keys)
            title = f"{metric} ({'per pair' if scope == 'pair' else 'per model'})"
            notes = [f"note ({'; '.join(places)}): {note}" for note, places in result.notes(metric, scope)]
            if result.resampling and any(v.intervals for v in vals):
                rs = result.resampling
                notes.insert(0, f"[lo, hi]: {rs['level']:.0%} delete-one-group jackknife interval over "
                                f"{rs['groups_used']} groups of images")
            table = Table(title=title, title_justify="left", caption="\n".join(notes) or None,
                          caption_justify="left", caption_style="yellow")  # the values' cautions, under them
            table.add_column("pair" if scope == "pair" else "model", overflow="fold")
            table.add_column("layer", overflow="fold")
            if split is None:
                rows: list[tuple[str, list[str]]] = [("", keys)]
            else:
                plain, base, ks = split
                table.add_column("k", justify="right", overflow="fold")
                rows = [(k, plain + [f"{b}@{k}" for b in base]) for k in ks]
                keys = plain + base
            for k in keys:
                table.add_column(k, justify="right", overflow="fold")
            for v in vals:
                shown = v.layer if typed.get(v.layer, v.layer) == v.layer else f"{v.layer} ({typed[v.layer]})"
                n_plain = 0 if split is None else len(split[0])
                mine = [r for r in rows if split is None or any(key in v.scalars for key in r[1][n_plain:])]
                for k_value, row_keys in mine or [("", rows[0][1])]:  # a value with no key at any k: one row
                    cells = [_cell(v, key) if key in v.scalars else "" for key in row_keys]
                    table.add_row(v.subject, shown, *([k_value] if split is not None else []), *cells)
            tables.append(table)
    return tables + cross_tables(result)


def cross_tables(result: Result) -> list[Any]:
    """The cross-layer CKA matrix of each pair whose models have their own layers (another architecture): rows are
    the base's layers, columns the tuned model's. Same-architecture matrices stay in the report's heatmap."""
    from rich.table import Table

    tables = []
    for v in result.values:
        matrix, tuned = v.arrays.get(f"{v.metric}_cross"), v.arrays.get("tuned_layers")  # any metric's METRIC_cross
        if v.layer != "*" or v.scope != "pair" or not matrix or not tuned:
            continue
        table = Table(title=f"{v.metric} cross-layer matrix ({v.subject}): base layers × tuned layers",
                      title_justify="left")
        table.add_column(f"{v.base} \\ {v.tuned}", overflow="fold")
        for name in tuned:
            table.add_column(str(name), justify="right", overflow="fold")
        for name, row in zip(v.arrays.get("layers", []), matrix):
            table.add_row(str(name), *(fmt(x) for x in row))
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
