"""Every metric's report figures from a :class:`~ftprobe.core.results.Result` (matplotlib, headless: ``Figure`` +
Agg), through one door: a metric's :meth:`~ftprobe.core.metric.Metric.figures` hook when the metric is installed
and has one (the built-ins' figures are in :mod:`ftprobe.metrics.figures`), else a default drawn from the headline
values its declaration names (:func:`default_figures`): a line per pair (or model) across layers for a scalar, a box
per pair (or model) and layer for a per-channel vector. Nothing here names a metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch

from ftprobe.core.results import Result

from ._access import MetricValues, as_float_array, interval, no_mathtext, pair_label, report_metrics

if TYPE_CHECKING:
    from .grids import GridSpec

__all__ = ["Figure", "box_figure", "clean", "colors", "default_figures", "draw_figures", "interval_band",
           "interval_bounds", "metric_figures", "save", "text_in"]

_DPI = 100
# report.html shows a figure at its own pixel size when it is at most ~1094 px wide (its content box); at 100 dpi the
# widest figure is then 10.6 in plus the 0.1 in padding of a tight bounding box on each side.
_PAGE_IN = 10.6
_SMALL_PT = 8.0  # the smallest text of a figure: 11 CSS px on the page
_MARGIN_IN = 1.4  # y label, y tick labels and padding beside an axis


@dataclass(frozen=True)
class Figure:
    """One written PNG and where it belongs in the report (``section`` is a metric name or ``"grids"``). A
    top-image grid also carries its :class:`~ftprobe.report.grids.GridSpec`: the page lays it out in HTML with each
    image embedded once, rather than embedding the PNG."""

    path: Path
    section: str
    title: str
    caption: str = ""
    grid: GridSpec | None = None


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: MplFigure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI, bbox_inches="tight", format="png")
    return path


def _clean(x: object) -> np.ndarray:
    a = as_float_array(x).ravel()
    return a[~np.isnan(a)]



def _text_in(text: str, points: float) -> float:
    """A generous estimate of the drawn width of ``text`` in inches (DejaVu Sans averages ~0.6 em per character)."""
    return 0.64 * len(text) * points / 72


def _boxes(ax: object, groups: Sequence[str], series: dict[str, list[np.ndarray]], start: int = 0) -> None:
    """Grouped box plots: one group per layer, one box per series (pair or model), means as white diamonds;
    ``series`` holds every layer, ``groups`` the names of those from ``start`` on drawn on this axis."""
    names = list(series)
    width = 0.8 / max(1, len(names))
    for j, (name, color) in enumerate(zip(names, _colors(len(names)))):
        pos = [i + (j - (len(names) - 1) / 2) * width for i in range(len(groups))]
        data = [d if d.size else np.array([np.nan]) for d in series[name][start : start + len(groups)]]
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showmeans=True, showfliers=True,
                        meanprops=dict(marker="D", markerfacecolor="white", markeredgecolor="black", markersize=4),
                        flierprops=dict(marker=".", markersize=2, alpha=0.4), medianprops=dict(color="black"))
        for box in bp["boxes"]:
            box.set_facecolor(color)
            box.set_alpha(0.75)
    ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _box_figure(groups: Sequence[str], series: dict[str, list[np.ndarray]], ylabel: str, title: str,
                ylim: tuple[float, float] | None = None) -> MplFigure:
    """Grouped box plots as wide as their boxes need, up to the report's width; more layers wrap onto further rows
    (same y range), one legend below."""
    group_in = max(0.7, 0.22 * len(series) + 0.3)
    per_row = max(1, int((_PAGE_IN - _MARGIN_IN) / group_in))
    per_row = -(-len(groups) // -(-len(groups) // per_row))  # as many rows as needed, filled evenly
    rows = [(a, min(a + per_row, len(groups))) for a in range(0, len(groups), per_row)]
    widest = max(z - a for a, z in rows)
    label_in = max(_text_in(g, 10) for g in groups) * 0.5  # rotated 30°
    fig = MplFigure(figsize=(min(_PAGE_IN, max(5.0, group_in * widest + _MARGIN_IN)),
                             len(rows) * (2.9 + label_in) + 0.8 + 0.2 * -(-len(series) // 3)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(rows), 1, sharey=True, squeeze=False)[:, 0])
    for ax, (a, z) in zip(axes, rows):
        _boxes(ax, groups[a:z], series, start=a)
        ax.set_xlim(-0.6, widest - 0.4)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
    names = list(series)
    handles = [Patch(facecolor=c, alpha=0.75, label=n) for n, c in zip(names, _colors(len(names)))]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(names), 3), fontsize=9)
    fig.suptitle(title)
    return fig


# Public names of the helpers, for figure hooks (a hook draws at the report's sizes with these).
PAGE_IN, SMALL_PT, MARGIN_IN = _PAGE_IN, _SMALL_PT, _MARGIN_IN
colors, clean, text_in, box_figure = _colors, _clean, _text_in, _box_figure


def save(fig: MplFigure, path: Path) -> Path:
    """Write a figure as the report's PNGs are written (dpi, tight bounding box)."""
    return _save(fig, path)


def interval_bounds(by_layer: dict[str, Any], key: str, layers: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``(lo, hi)`` arrays of ``key``'s intervals over ``layers`` (NaN where a layer has none), from a
    ``{layer: Value}`` map; None when no layer has an interval (a run without intervals, a version 1 file)."""
    ivs = [interval(by_layer.get(n), key) for n in layers]
    if not any(ivs):
        return None
    lo = np.array([iv[0] if iv else np.nan for iv in ivs], dtype=float)
    hi = np.array([iv[1] if iv else np.nan for iv in ivs], dtype=float)
    return lo, hi


def interval_band(ax: Any, x: Sequence[float], bounds: tuple[np.ndarray, np.ndarray] | None, color: Any) -> Any:
    """Shade a line's intervals (``lo``..``hi`` per point) on ``ax``: a translucent band, with error bars so a
    lone point (its neighbours without interval) shows its interval too. Nothing when ``bounds`` is None."""
    if bounds is None:
        return None
    lo, hi = bounds
    xs = np.asarray(x, dtype=float)
    band = ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0)
    mid = (lo + hi) / 2
    ax.errorbar(xs, mid, yerr=(hi - lo) / 2, fmt="none", ecolor=color, elinewidth=1, capsize=3, alpha=0.8)
    return band


def _line_figure(values: MetricValues, key: str, groups: dict[str, dict[str, float]],
                 bounds: dict[str, tuple[np.ndarray, np.ndarray] | None] | None = None) -> MplFigure:
    """A line per subject (pair or model) across the layers, of one scalar key; its intervals shaded when given."""
    layers = [n for n in values.layers() if any(n in d for d in groups.values())]
    width = min(_PAGE_IN, max(5.0, 0.8 * len(layers) + 2.5))
    crowded = (width - 2.5) / max(1, len(layers)) < 0.5
    fig = MplFigure(figsize=(width, 3.6 + (1.0 if crowded else 0.0)))
    ax = fig.subplots()
    for color, (subject, by_layer) in zip(_colors(len(groups)), groups.items()):
        ax.plot(range(len(layers)), [by_layer.get(n, np.nan) for n in layers], "o-", color=color, label=subject)
        interval_band(ax, range(len(layers)), (bounds or {}).get(subject), color)
    ax.set_xticks(range(len(layers)), [values.label(n) for n in layers], rotation=90 if crowded else 30,
                  ha="center" if crowded else "right", fontsize=_SMALL_PT if crowded else None)
    unit = values.unit(key)
    ax.set_ylabel(values.value_name(key) + (f" ({unit})" if unit else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{values.title}: {values.value_name(key)} per layer")
    return fig


def default_figures(values: MetricValues) -> list[Figure]:
    """The figures of a metric without a hook: for each value key its headline names (globs), a line plot across
    layers of a scalar, grouped box plots of a per-channel vector. Nothing when it declares no headline."""
    subjects = {**{pair_label(b, t): d for (b, t), d in values.pairs().items()}, **values.models()}
    figs: list[Figure] = []
    for i, key in enumerate(values.headline_keys(), start=1):
        scalars = {s: {n: v.scalars[key] for n, v in d.items() if key in v.scalars} for s, d in subjects.items()}
        scalars = {s: d for s, d in scalars.items() if d}
        arrays = {s: {n: _clean(v.arrays[key]) for n, v in d.items() if isinstance(v.arrays.get(key), list)}
                  for s, d in subjects.items()}
        arrays = {s: d for s, d in arrays.items() if d}
        name = values.value_name(key)
        if scalars:
            layers = [n for n in values.layers() if any(n in d for d in scalars.values())]
            bounds = {s: interval_bounds(subjects[s], key, layers) for s in scalars}
            fig = _line_figure(values, key, scalars, bounds)
            caption = "One line per pair" if values.pairs() else "One line per model"
            if any(b is not None for b in bounds.values()):
                level = float((values.result.resampling or {}).get("level", 0.95)) * 100
                caption += f"; shaded: {level:g} % interval"
        elif arrays:
            layers = [n for n in values.layers() if any(n in d for d in arrays.values())]
            series = {s: [d.get(n, np.zeros(0)) for n in layers] for s, d in arrays.items()}
            unit = values.unit(key)
            fig = _box_figure([values.label(n) for n in layers], series, name + (f" ({unit})" if unit else ""),
                              f"{values.title}: {name} per layer")
            caption = "Box over channels (quartiles, whiskers 1.5 IQR); diamond = mean"
        else:
            continue
        direction = values.direction
        if direction is not None:
            caption += "; higher = more similar" if direction else "; higher = more changed"
        path = save(fig, values.out / f"{values.stem}_{i}.png")
        figs.append(Figure(path, values.metric, f"{name} per layer", caption + "."))
    return figs


def _from_hook(values: MetricValues, drawn: object) -> list[Figure]:
    """A hook's answer as written figures: a matplotlib figure or a list of them (saved here, numbered), or
    :class:`Figure` records the hook wrote itself."""
    items = [drawn] if isinstance(drawn, MplFigure) else list(drawn or [])  # type: ignore[call-overload]
    figs: list[Figure] = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, Figure):
            figs.append(item)
        elif isinstance(item, MplFigure):
            title = item.get_suptitle() or (item.axes[0].get_title() if item.axes else "") or values.title
            figs.append(Figure(save(item, values.out / f"{values.stem}_{i}.png"), values.metric, title))
        else:
            raise TypeError(f"the figures() hook of metric {values.metric!r} returned {type(item).__name__}; "
                            "return a matplotlib Figure, a list of them, or ftprobe.report.Figure records")
    return figs


@no_mathtext
def metric_figures(values: MetricValues) -> list[Figure]:
    """One metric's figures: its installed hook's, else the default ones."""
    hook = values.hook()
    drawn = hook(values) if hook is not None else None
    return _from_hook(values, drawn) if drawn else default_figures(values)


@no_mathtext
def draw_figures(result: Result, out_dir: str | Path) -> list[Figure]:
    """Draw every metric's figures the result has values for into ``out_dir`` (created); grids are separate."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs: list[Figure] = []
    for metric in report_metrics(result):
        figs.extend(metric_figures(MetricValues(result, metric, out)))
    return figs


def __getattr__(name: str) -> object:
    """The built-in metrics' figure functions, importable from here as before (:mod:`ftprobe.metrics.figures`)."""
    import importlib

    builtin = importlib.import_module("ftprobe.metrics.figures")
    if name in builtin.__all__:
        return getattr(builtin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
