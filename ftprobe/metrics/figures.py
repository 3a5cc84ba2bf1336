"""The built-in metrics' report figures (their :meth:`~ftprobe.core.metric.Metric.figures` hooks draw these).

CKA per layer (a line per pair) and the cross-layer CKA heatmap, weight change per module (raw and relative), top-k
overlap box plots (per layer, a box per pair, mean marked), class-concentration box plots (per layer, a box per
model) and overlap against concentration (a point per channel, coloured by layer). Each is drawn only when the
result holds its values; file names are built from indices and k, never from user-supplied names. Each function
takes the metric's name (the one in the result) and is also importable from :mod:`ftprobe.report.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure as MplFigure

from ftprobe.core.results import Result
from ftprobe.report import figures as _report
from ftprobe.report._access import (
    as_float_array,
    k_keys,
    layer_label,
    layer_order,
    model_values,
    pair_label,
    pair_values,
    slug,
)
from ftprobe.report.figures import MARGIN_IN as _MARGIN_IN
from ftprobe.report.figures import PAGE_IN as _PAGE_IN
from ftprobe.report.figures import SMALL_PT as _SMALL_PT
from ftprobe.report.figures import Figure, box_figure, clean, colors, text_in

__all__ = ["cka_cross", "cka_per_layer", "class_concentration", "module_labels", "overlap_vs_concentration",
           "topk_overlap", "weight_change"]

_MODULE_IN = 0.19  # room per module tick: a rotated 8 pt label is ~0.13 in thick
_MEASURES = ("entropy", "gini")
_colors, _clean, _box_figure, _text_in = colors, clean, box_figure, text_in


def _save(fig: MplFigure, path: Path) -> Path:
    return _report.save(fig, path)


def cka_per_layer(result: Result, out: Path, metric: str = "cka") -> list[Figure]:
    """CKA per layer, one line per pair (x: layers in selection order)."""
    pairs = pair_values(result, metric)
    layers = [name for name in layer_order(result) if any(name in d for d in pairs.values())]
    if not layers:
        return []
    width = min(_PAGE_IN, max(5.0, 0.8 * len(layers) + 2.5))  # the report's width at most: more layers, upright ticks
    crowded = (width - 2.5) / len(layers) < 0.5
    fig = MplFigure(figsize=(width, 3.6 + (1.0 if crowded else 0.0)))
    ax = fig.subplots()
    lo, shuffled = 0.0, False
    for color, ((b, t), by_layer) in zip(_colors(len(pairs)), pairs.items()):
        y = [by_layer[n].scalars.get("cka", np.nan) if n in by_layer else np.nan for n in layers]
        ax.plot(range(len(layers)), y, "o-", color=color, label=pair_label(b, t))
        bounds = _report.interval_bounds(by_layer, "cka", layers)
        _report.interval_band(ax, range(len(layers)), bounds, color)
        chance = [by_layer[n].scalars.get("cka_shuffled", np.nan) if n in by_layer else np.nan for n in layers]
        if not np.all(np.isnan(chance)):  # the estimator's value for images paired at random
            ax.plot(range(len(layers)), chance, ":", color=color, alpha=0.7, linewidth=1)
            shuffled = True
        lo = min(lo, float(np.nanmin(y)) if not np.all(np.isnan(y)) else 0.0)
        if bounds is not None and not np.all(np.isnan(bounds[0])):
            lo = min(lo, float(np.nanmin(bounds[0])))
    star = next((v for v in result.values if v.metric == metric and v.layer == "*"), None)
    how = ""
    if star is not None:
        a = star.arrays
        how = ", ".join(str(a[k]) for k in ("kernel", "estimator", "features") if isinstance(a.get(k), str))
    ax.set_xticks(range(len(layers)), [layer_label(result, n) for n in layers], rotation=90 if crowded else 30,
                  ha="center" if crowded else "right", fontsize=_SMALL_PT if crowded else None)
    ax.set_ylabel("CKA" + (f" ({how})" if how else ""))
    ax.set_ylim(min(lo, 0.0) - 0.02, 1.02)  # never clipped: values outside [0, 1] widen the axis
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("CKA between the models' features, per layer")
    path = _save(fig, out / "cka_per_layer.png")
    caption = "One line per pair; 1 = same representation (up to rotation)."
    if result.resampling and any(v.intervals for d in pairs.values() for v in d.values()):
        caption += f" Shaded: {result.resampling['level']:.0%} intervals over images."
    if shuffled:
        caption += " Dotted: the same estimator with the images paired at random (its chance level)."
    return [Figure(path, metric, "CKA per layer", caption)]


def module_labels(paths: Sequence[str]) -> list[str]:
    """Tick labels for module paths: the shortest dotted suffix of each that no other path ends with, and never a
    bare index (``conv2d0.0``, not ``0``; ``0.attn.qkv`` beside ``1.attn.qkv``)."""
    parts = [p.split(".") for p in paths]
    counts: dict[str, int] = {}
    for comps in parts:
        for j in range(len(comps)):
            suffix = ".".join(comps[j:])
            counts[suffix] = counts.get(suffix, 0) + 1
    labels = []
    for path, comps in zip(paths, parts):
        label = path
        for j in range(len(comps) - 1, -1, -1):
            suffix = ".".join(comps[j:])
            if counts[suffix] == 1 and not (j == len(comps) - 1 and suffix.isdigit()):
                label = suffix
                break
        labels.append(label)
    return labels


def _module_rows(spans: Sequence[tuple[str, int, int]], per_row: int) -> list[tuple[int, int]]:
    """Split ``[0, n)`` into rows of at most ``per_row`` modules, breaking between layers where one fits."""
    rows: list[tuple[int, int]] = []
    start = 0
    for _, a, z in spans:
        if z - start > per_row and a > start:
            rows.append((start, a))
            start = a
        while z - start > per_row:  # one layer longer than a row
            rows.append((start, start + per_row))
            start += per_row
    end = spans[-1][2] if spans else 0
    if end > start:
        rows.append((start, end))
    return rows


def _band_labels(ax: object, spans: Sequence[tuple[str, float, float]], step_in: float) -> None:
    """Layer names centred over their bands in up to two staggered lines; a name that fits neither line is left out
    (its modules' tick labels still name it)."""
    ends = [-np.inf, -np.inf]
    for label, a, z in spans:
        centre, half = (a + z) / 2, _text_in(label, _SMALL_PT) / step_in / 2 + 0.1
        line = next((i for i in (0, 1) if centre - half >= ends[i]), None)
        if line is None:
            continue
        ends[line] = centre + half
        ax.text(centre, 1.02 + 0.09 * line, label, transform=ax.get_xaxis_transform(),  # type: ignore[attr-defined]
                ha="center", va="bottom", fontsize=_SMALL_PT)


def weight_change(result: Result, out: Path, metric: str = "weight_l2") -> list[Figure]:
    """Raw ‖ΔW‖_F and relative ‖ΔW‖/‖W_base‖ of every measured module, in layer order, one line per pair.

    Each module has its own tick (its shortest distinguishing path suffix); layers are shaded bands named above
    the plot. The figure is as wide as the modules need up to the report's width; more modules wrap onto further
    rows (a row breaks between layers where it can), so labels keep their size at any count.
    """
    pairs = pair_values(result, metric)
    order = [n for n in layer_order(result) if any(n in d and d[n].arrays.get("modules") for d in pairs.values())]
    if not order:
        return []
    modules: list[str] = []
    spans: list[tuple[str, int, int]] = []
    for name in order:
        first = len(modules)
        for d in pairs.values():
            for m in d[name].arrays.get("modules", []) if name in d else []:
                if m not in modules:
                    modules.append(m)
        spans.append((name, first, len(modules)))
    n = len(modules)
    shown = []  # the path as the user knows it: an aliased layer by the name they typed
    for name, a, z in spans:
        label = layer_label(result, name)
        shown += [label + m[len(name):] if m.startswith(name) else m for m in modules[a:z]]
    ticks = module_labels(shown)
    per_row = max(1, int((_PAGE_IN - _MARGIN_IN) / _MODULE_IN))
    rows = _module_rows(spans, per_row)
    widest = max(z - a for a, z in rows)
    width = min(_PAGE_IN, max(7.5, _MODULE_IN * widest + _MARGIN_IN))
    tick_in = max(_text_in(t, _SMALL_PT) for t in ticks)
    fig = MplFigure(figsize=(width, len(rows) * (4.4 + tick_in) + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(2 * len(rows), 1, sharey="none", squeeze=False))[:, 0].reshape(len(rows), 2)
    for r in range(1, len(rows)):
        axes[r, 0].sharey(axes[0, 0])
        axes[r, 1].sharey(axes[0, 1])
    lines = []
    for color, ((b, t), by_layer) in zip(_colors(len(pairs)), pairs.items()):
        raw, rel = np.full(n, np.nan), np.full(n, np.nan)
        for v in by_layer.values():
            names = v.arrays.get("modules", [])
            for key, dest in (("module_l2", raw), ("module_relative", rel)):
                vals = as_float_array(v.arrays.get(key, []))
                for m, x in zip(names, vals):
                    dest[modules.index(m)] = x
        for (a, z), (ax_raw, ax_rel) in zip(rows, axes):
            x = np.arange(a, z)
            line, = ax_raw.plot(x, raw[a:z], "o-", ms=3, color=color, label=pair_label(b, t))
            ax_rel.plot(x, rel[a:z], "o-", ms=3, color=color)
        lines.append(line)
    step_in = (width - _MARGIN_IN) / widest
    for (a, z), (ax_raw, ax_rel) in zip(rows, axes):
        row_spans = [(layer_label(result, name), max(s, a), min(e, z)) for name, s, e in spans if s < z and e > a]
        for i, (_, s, e) in enumerate(row_spans):
            if (i + sum(1 for _, _, e0 in spans if e0 <= a)) % 2:
                for ax in (ax_raw, ax_rel):
                    ax.axvspan(s - 0.5, e - 0.5, color="0.92", zorder=0)
        _band_labels(ax_raw, [(lab, s - 0.5, e - 0.5) for lab, s, e in row_spans], step_in)
        for ax in (ax_raw, ax_rel):
            ax.set_xlim(a - 0.5, a + widest - 0.5)
            ax.grid(alpha=0.3)
        ax_raw.set_xticks(range(a, z), [""] * (z - a))
        ax_rel.set_xticks(range(a, z), ticks[a:z], rotation=90, fontsize=_SMALL_PT)
        ax_raw.set_ylabel("‖W_tuned − W_base‖_F")
        ax_rel.set_ylabel("relative ‖ΔW‖ / ‖W_base‖")
    fig.legend(handles=lines, loc="outside lower center", ncols=min(len(lines), 3), fontsize=9)
    fig.suptitle("Weight change per module (biases ignored)")
    path = _save(fig, out / "weight_change.png")
    return [Figure(path, metric, "Weight change per module",
                   f"{n} modules in layer order (shaded bands: layers); gaps are replaced modules (other shape).")]


def topk_overlap(result: Result, out: Path, metric: str = "topk_overlap") -> list[Figure]:
    """Per k: box plots over channels of the overlap (percent), per layer, a box per pair."""
    pairs = pair_values(result, metric)
    figs: list[Figure] = []
    for k in k_keys([v for d in pairs.values() for v in d.values()], "overlap"):
        layers = [n for n in layer_order(result) if any(f"overlap@{k}" in d.get(n, _NO).arrays for d in pairs.values())]
        series = {pair_label(b, t): [_clean(d[n].arrays.get(f"overlap@{k}")) if n in d else np.zeros(0)
                                     for n in layers] for (b, t), d in pairs.items()}
        fig = _box_figure([layer_label(result, n) for n in layers], series, f"top-{k} overlap (%)",
                          f"Overlap of each channel's top-{k} images, base vs tuned", ylim=(-3, 103))
        path = _save(fig, out / f"topk_overlap_k{slug(k)}.png")
        figs.append(Figure(path, metric, f"Top-{k} overlap per layer",
                           "Box over channels (quartiles, whiskers 1.5 IQR); diamond = mean. Channels with no "
                           "positive image count as 0."))
    return figs


class _Empty:
    arrays: dict = {}


_NO = _Empty()


def _measure(values: Sequence[object]) -> str:
    for v in values:
        for key in v.arrays:  # type: ignore[attr-defined]
            for m in _MEASURES:
                if key.startswith(m + "@"):
                    return m
    return "entropy"


def class_concentration(result: Result, out: Path, metric: str = "class_concentration") -> list[Figure]:
    """Per k: box plots over alive channels of the normalised entropy (or Gini), per layer, a box per model."""
    models = model_values(result, metric)
    vals = [v for d in models.values() for v in d.values()]
    measure = _measure(vals)
    figs: list[Figure] = []
    for k in k_keys(vals, measure):
        key = f"{measure}@{k}"
        layers = [n for n in layer_order(result) if any(key in d.get(n, _NO).arrays for d in models.values())]
        series = {m: [_clean(d[n].arrays.get(key)) if n in d else np.zeros(0) for n in layers]
                  for m, d in models.items()}
        fig = _box_figure([layer_label(result, n) for n in layers], series,
                          "normalised entropy" if measure == "entropy" else "Gini",
                          f"Class concentration of each channel's top-{k} images (low = few classes)")
        path = _save(fig, out / f"class_concentration_k{slug(k)}.png")
        figs.append(Figure(path, metric, f"Class concentration of the top-{k} images",
                           "Box over channels with at least one positive image; diamond = mean."))
    return figs


def overlap_vs_concentration(result: Result, out: Path, metric: str = "class_concentration",
                             overlap: str = "topk_overlap") -> list[Figure]:
    """Per k: for each pair, overlap (x) against the tuned model's concentration (y), one point per channel.

    One panel per pair in a grid of at most three columns, the figure sized from the panel count (so the page shows
    it at its own size and every panel keeps its text size), one legend of the layers for all panels.
    """
    pairs = pair_values(result, overlap)
    models = model_values(result, metric)
    measure = _measure([v for d in models.values() for v in d.values()])
    figs: list[Figure] = []
    for k in k_keys([v for d in pairs.values() for v in d.values()], "overlap"):
        usable = [(b, t) for (b, t), d in pairs.items() if t in models
                  and any(f"{measure}@{k}" in models[t].get(n, _NO).arrays for n in d)]
        if not usable:
            continue
        layers = [n for n in layer_order(result) if any(n in pairs[p] for p in usable)]
        colors = dict(zip(layers, _colors(len(layers))))
        ncols = min(len(usable), 3)
        nrows = -(-len(usable) // ncols)
        legend_rows = -(-len(layers) // 5)
        fig = MplFigure(figsize=(min(_PAGE_IN, 3.3 * ncols + 0.7), 3.2 * nrows + 0.8 + 0.2 * legend_rows),
                        layout="constrained")
        grid = np.atleast_2d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False))
        axes = list(grid.ravel())
        for ax in axes[len(usable):]:
            fig.delaxes(ax)
        handles: dict[str, object] = {}
        for i, (ax, (b, t)) in enumerate(zip(axes, usable)):
            for n in layers:
                if n not in pairs[(b, t)] or n not in models[t]:
                    continue
                x = as_float_array(pairs[(b, t)][n].arrays.get(f"overlap@{k}"))
                y = as_float_array(models[t][n].arrays.get(f"{measure}@{k}"))
                if x.shape != y.shape:
                    continue
                ok = ~np.isnan(x) & ~np.isnan(y)
                handles[n] = ax.scatter(x[ok], y[ok], s=9, alpha=0.6, color=colors[n], label=layer_label(result, n))
            ax.set_title(_wrap(pair_label(b, t), 34), fontsize=10)
            ax.set_xlim(-3, 103)
            ax.grid(alpha=0.3)
            if i % ncols == 0:
                ax.set_ylabel(("normalised entropy" if measure == "entropy" else "Gini") + " (tuned model)")
            if i + ncols >= len(usable):  # the lowest panel of its column
                ax.set_xlabel(f"top-{k} overlap (%)")
                ax.xaxis.set_tick_params(labelbottom=True)
        fig.legend(handles=[handles[n] for n in layers if n in handles], loc="outside lower center",
                   ncols=min(len(handles), 5), fontsize=9, markerscale=2)
        fig.suptitle(f"Overlap against class concentration, one point per channel (k={k})")
        path = _save(fig, out / f"overlap_vs_concentration_k{slug(k)}.png")
        figs.append(Figure(path, metric, f"Overlap against concentration (k={k})",
                           "One panel per pair (base → tuned). Channels with no positive image in the tuned model "
                           "are left out."))
    return figs


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def cka_cross(result: Result, out: Path, metric: str = "cka") -> list[Figure]:
    """The cross-layer CKA matrix (base layer × tuned layer), one heatmap per pair, when it was computed."""
    stars = [v for v in result.values if v.metric == metric and v.layer == "*" and v.scope == "pair"
             and v.arrays.get("cka_cross") is not None]
    figs: list[Figure] = []
    for i, v in enumerate(stars):
        mat = as_float_array(v.arrays["cka_cross"])
        if mat.ndim != 2 or not mat.size:
            continue
        names = [layer_label(result, n) for n in v.arrays.get("layers", [])] or [str(j) for j in range(len(mat))]
        tuned = v.arrays.get("tuned_layers")  # another architecture: the tuned model's own layer names
        columns = [str(n) for n in tuned] if tuned else names
        side = min(_PAGE_IN - 1.0, max(4.0, 0.55 * max(len(names), len(columns)) + 2.5))  # the report's width
        fig = MplFigure(figsize=(side + 1.0, side))
        ax = fig.subplots()
        im = ax.imshow(mat, cmap="viridis", vmin=min(0.0, float(np.nanmin(mat))), vmax=max(1.0, float(np.nanmax(mat))))
        cell_in = (side - 2.5) / max(mat.shape)
        tick_pt = None if cell_in >= 0.2 else _SMALL_PT  # many layers: ticks at the smallest size, still apart
        ax.set_xticks(range(mat.shape[1]), columns[: mat.shape[1]], rotation=90 if tick_pt else 45,
                      ha="center" if tick_pt else "right", fontsize=tick_pt)
        ax.set_yticks(range(mat.shape[0]), names[: mat.shape[0]], fontsize=tick_pt)
        ax.set_xlabel(f"{v.tuned} (tuned) layer")
        ax.set_ylabel(f"{v.base} (base) layer")
        if cell_in >= 0.4:  # room for the value in each cell at the smallest text size
            for (r, c), x in np.ndenumerate(mat):
                ax.text(c, r, "" if np.isnan(x) else f"{x:.2f}", ha="center", va="center", fontsize=_SMALL_PT,
                        color="white" if x < 0.6 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="CKA")
        ax.set_title(f"Cross-layer CKA, {pair_label(v.base, v.tuned)}")
        path = _save(fig, out / f"cka_cross_pair{i + 1}.png")
        diagonal = ("the diagonal is the per-layer CKA" if mat.shape[0] == mat.shape[1]
                    else "the layer lists are not paired, so there is no diagonal")
        figs.append(Figure(path, metric, f"Cross-layer CKA ({pair_label(v.base, v.tuned)})",
                           f"Rows: base layers; columns: tuned layers; {diagonal}."))
    return figs


