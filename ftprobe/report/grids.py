"""Grids of each channel's top-k images, base and tuned side by side (PAPER.md, Visualisation).

The images come from ``result.data["index_paths"]`` (global sample index → file) and the per-model arrays
``topk_index@K`` of ``topk_overlap`` (``(C, W)``, ``-1`` = none). An image that is also in the other model's
top-K set gets an orange frame; its class label is written under it. A file that is gone or unreadable is drawn
as a grey placeholder.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ftprobe.core.errors import FtprobeError
from ftprobe.core.results import Result, Value

from ._access import (
    as_float_array,
    k_keys,
    layer_label,
    layer_order,
    pair_label,
    slug,
)
from .figures import Figure

__all__ = ["GridSpec", "Thumbnails", "draw_topk_grid", "encode_thumb", "grid_html", "grid_rows", "render_grids",
           "report_channels", "topk_sets"]

SHARED_COLOR = "#e66100"
_CELL = 96  # thumbnail side in pixels, in the PNG grids and on the page (shown at its own size)
_FLAT_COLOURS = 256


def topk_sets(result: Result, layer: str, model: str) -> tuple[str, np.ndarray] | None:
    """``(K, index (C, W) int64)`` of one model's top-K images at a layer (the ``topk_index@K`` array of the first
    model value that records one), or None when not recorded."""
    for v in result.values:
        if v.scope == "model" and v.model == model and v.layer == layer:
            ks = k_keys([v], "topk_index")
            if ks:
                arr = np.asarray(as_float_array(v.arrays[f"topk_index@{ks[-1]}"]), dtype=np.float64)
                arr = np.nan_to_num(arr, nan=-1).astype(np.int64)
                return ks[-1], arr.reshape(arr.shape[0], -1) if arr.size else arr.reshape(0, 0)
    return None


def _thumb(path: str | None) -> np.ndarray | None:
    """A square ``(_CELL, _CELL, 3)`` uint8 centre crop of an image file, None when missing or unreadable."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _thumb_cached(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1024)
def _thumb_cached(path: str, mtime_ns: int, size: int) -> np.ndarray | None:
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as img:
            return np.asarray(ImageOps.fit(img.convert("RGB"), (_CELL, _CELL)))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # missing, truncated, not an image
        return None


def _label_of(result: Result, index: int) -> str:
    """The class of a sample: ``data.index_labels`` when recorded, else an ImageFolder's class folder, else the
    file name."""
    data = result.data or {}
    classes = data.get("classes") or []
    labels = (data.get("index_labels") or {}).get(str(index))
    if labels is not None:
        ids = labels if isinstance(labels, list) else [labels]
        return ", ".join(classes[i] if 0 <= i < len(classes) else str(i) for i in ids) or "—"
    path = (data.get("index_paths") or {}).get(str(index))
    if path is None:
        return f"#{index}"
    p = Path(path)
    if data.get("kind") == "image_folder" and p.parent.name in classes:
        return p.parent.name
    return p.name


def _short(text: str, n: int = 16) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# Grid geometry in pixels: the images go into one numpy canvas, Pillow writes the text (no matplotlib: fast).
_PAD, _GAP, _LABEL, _TITLE, _HEAD, _FRAME = 6, 28, 16, 20, 44, 4


def _paste(canvas: np.ndarray, x: int, y: int, img: np.ndarray | None, shared: bool) -> None:
    """Put one image (or the grey placeholder) at ``(x, y)``; frame it in orange when ``shared``."""
    if shared:
        rgb = np.array([int(SHARED_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        canvas[y - _FRAME : y + _CELL + _FRAME, x - _FRAME : x + _CELL + _FRAME] = rgb
    canvas[y : y + _CELL, x : x + _CELL] = 0.6 if img is None else img / 255.0


@functools.lru_cache(maxsize=8)
def _font(size: int, bold: bool = False) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels; Pillow's default font if it cannot be read."""
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except OSError:
        return ImageFont.load_default()


@dataclass(frozen=True)
class GridRow:
    """One channel of a grid: its title, and per model (base, tuned) the shown ``(sample index, in the other
    model's top-K)`` of its ranking (``-1`` = no image at that rank)."""

    channel: int
    title: str
    sides: tuple[tuple[tuple[int, bool], ...], tuple[tuple[int, bool], ...]]


@dataclass(frozen=True)
class GridSpec:
    """What one grid of the report shows: a pair, a layer, channels (each with why it was picked) and how many images
    per model; :func:`grid_rows` reads the images from the result."""

    pair: tuple[str, str]
    layer: str
    channels: tuple[int, ...]
    notes: tuple[str, ...] = ()
    show: int = 8


def grid_rows(result: Result, layer: str, channels: Sequence[int], *, pair: tuple[str, str] | None = None,
              show: int = 8, notes: Sequence[str] | None = None) -> tuple[str, tuple[str, str], str, list[GridRow]]:
    """``(canonical layer, pair, K, rows)`` of a grid; the checks and errors of :func:`draw_topk_grid`."""
    if pair is None:
        if not result.pairs:
            raise FtprobeError("the result has no pair of models; run `ftprobe compare BASE TUNED ...` first")
        pair = (result.pairs[0][0], result.pairs[0][1])
    layer = next((r["name"] for r in result.layers if r.get("spec") == layer and r["name"] != layer), layer)
    sets = [topk_sets(result, layer, m) for m in pair]
    if sets[0] is None or sets[1] is None:
        raise FtprobeError(
            f"the result has no top-k images of layer {layer!r} for {pair_label(*pair)}; run the comparison with "
            f"--metrics topk_overlap --layers {layer}"
        )
    k, base_idx = sets[0]
    tuned_idx = sets[1][1]
    n_ch = base_idx.shape[0]
    bad = [int(c) for c in channels if not 0 <= int(c) < n_ch]
    if bad or not channels:
        raise FtprobeError(f"layer {layer!r} has {n_ch} channels; pick channels in 0..{n_ch - 1} (got {bad or 'none'})")
    show = max(1, int(show))
    rows = []
    for r, c in enumerate(int(c) for c in channels):
        b, t = base_idx[c], tuned_idx[c]
        sb, st = set(b[b >= 0].tolist()), set(t[t >= 0].tolist())
        note = f"{notes[r]} · " if notes and r < len(notes) and notes[r] else ""
        sides = tuple(tuple((int(i), int(i) in other) for i in idx[:show]) for idx, other in ((b, st), (t, sb)))
        rows.append(GridRow(c, f"channel {c}: {note}{len(sb & st)} of top-{k} in both", sides))  # type: ignore[arg-type]
    return layer, (pair[0], pair[1]), k, rows


def draw_topk_grid(
    result: Result,
    layer: str,
    channels: Sequence[int],
    path: str | Path,
    *,
    pair: tuple[str, str] | None = None,
    show: int = 8,
    notes: Sequence[str] | None = None,
) -> Path:
    """Draw, for each channel, its top images in the base (left) and the tuned model (right).

    Args:
        result: A result with ``topk_overlap`` model values (``topk_index@K``) at ``layer`` and ``data.index_paths``.
        layer: Canonical layer name (or the alias the user typed).
        channels: Channel indices, one row each.
        path: The PNG to write.
        pair: ``(base, tuned)`` labels; default the first pair.
        show: Images per model and channel (the first ``show`` of the top-K ranking).
        notes: One short text per channel, shown above its row (why it was picked).

    Raises:
        FtprobeError: No top-k values for that layer or pair, or a channel out of range.
    """
    layer, pair, k, rows = grid_rows(result, layer, channels, pair=pair, show=show, notes=notes)
    show = max(1, int(show))
    step = _CELL + 2 * _PAD
    row_h = _TITLE + step + _LABEL
    width = 2 * show * step + _GAP
    height = _HEAD + len(rows) * row_h
    canvas = np.ones((height, width, 3))
    paths = (result.data or {}).get("index_paths") or {}
    texts: list[tuple[float, float, str, dict]] = []
    for r, row in enumerate(rows):
        top = _HEAD + r * row_h
        texts.append((_PAD, top + _TITLE - 5, _short(row.title, width // 7), {"size": 11}))
        for side, cells in enumerate(row.sides):
            if not any(i >= 0 for i, _ in cells):
                texts.append((side * (show * step + _GAP) + show * step / 2, top + _TITLE + step / 2,
                              "no image with a positive score", {"size": 11, "anchor": "mm", "color": (96, 96, 96)}))
            for j, (i, shared) in enumerate(cells):
                if i < 0:
                    continue
                x = side * (show * step + _GAP) + j * step + _PAD
                y = top + _TITLE + _PAD
                thumb = _thumb(paths.get(str(i)))
                _paste(canvas, x, y, thumb, shared)
                if thumb is None:
                    texts.append((x + _CELL / 2, y + _CELL / 2, "missing",
                                  {"size": 11, "anchor": "mm", "color": (64, 64, 64)}))
                texts.append((x + _CELL / 2, y + _CELL + _FRAME + 11, _short(_label_of(result, i)),
                              {"size": 10, "anchor": "ms"}))
    half = show * step
    texts.append((half / 2, _HEAD - 8, f"base: {pair[0]}", {"size": 13, "anchor": "ms", "bold": True}))
    texts.append((half + _GAP + half / 2, _HEAD - 8, f"tuned: {pair[1]}", {"size": 13, "anchor": "ms", "bold": True}))
    texts.append((_PAD, 16, f"{layer_label(result, layer)}: top images per channel, best first "
                            f"(orange frame: in both top-{k} sets)", {"size": 13}))
    canvas[:, half + _GAP // 2] = 0.7  # the line between the two models
    from PIL import Image, ImageDraw

    img = Image.fromarray((canvas * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for x, y, text, kw in texts:
        draw.text((x, y), text, fill=kw.get("color", (20, 20, 20)), font=_font(kw["size"], kw.get("bold", False)),
                  anchor=kw.get("anchor", "ls"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def encode_thumb(img: np.ndarray) -> tuple[str, bytes]:
    """``(MIME type, bytes)`` of a thumbnail ``(H, W, 3)`` uint8: PNG for flat graphics (at most 256 colours: exact
    and small), JPEG at quality 85 for photographs (PNG would be several times larger)."""
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    buf = io.BytesIO()
    if pil.getcolors(_FLAT_COLOURS) is not None:
        pil.save(buf, format="PNG", optimize=True)
        return "image/png", buf.getvalue()
    pil.save(buf, format="JPEG", quality=85, optimize=True)
    return "image/jpeg", buf.getvalue()


class Thumbnails:
    """The page's top images, each embedded once: a CSS class per file whose background is its thumbnail (≤ _CELL
    px, :func:`encode_thumb`), however many grid cells show it."""

    def __init__(self) -> None:
        self._classes: dict[str, str | None] = {}
        self._rules: list[str] = []

    def css_class(self, path: str | None) -> str | None:
        """The class of the image at ``path``, None when it is missing or unreadable."""
        if not path:
            return None
        if path not in self._classes:
            img = _thumb(path)
            name = None
            if img is not None:
                name = f"t{len(self._rules)}"
                mime, data = encode_thumb(img)
                self._rules.append(f".{name}{{background-image:url(data:{mime};base64,"
                                   f"{base64.b64encode(data).decode('ascii')})}}")
            self._classes[path] = name
        return self._classes[path]

    def css(self) -> str:
        return "\n".join(self._rules)


GRID_CSS = f"""
.tk{{margin:6px 0 18px}}.tk-h{{margin:10px 0 4px;font-size:13px}}.tk-row{{display:flex;flex-wrap:wrap;
align-items:flex-start;gap:4px 8px;margin:2px 0 6px}}.tk-m{{width:110px;font-size:12px;font-weight:600;
overflow-wrap:anywhere;padding-top:36px}}.tk-c{{width:{_CELL}px}}.th{{width:{_CELL}px;height:{_CELL}px;
background:#999 center/cover no-repeat;outline:1px solid #ddd}}.tk-c.shared .th{{outline:{_FRAME}px solid
{SHARED_COLOR};outline-offset:-{_FRAME}px}}.tk-c p{{margin:2px 0 0;font-size:11px;text-align:center;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}}.th.gone{{display:flex;align-items:center;justify-content:center;
color:#333;font-size:11px}}.tk-none{{color:#666;font-size:12px;padding:36px 0}}
"""


def grid_html(result: Result, grid: GridSpec, thumbs: Thumbnails) -> str:
    """One grid as HTML: per channel a title, then a row of the base model's top images and one of the tuned model's
    (same rank in the same column); an orange frame marks an image in both top-K sets, its class is under it.
    Every text is escaped; the images are :class:`Thumbnails` classes."""
    layer, pair, k, rows = grid_rows(result, grid.layer, grid.channels, pair=grid.pair, show=grid.show,
                                     notes=grid.notes)
    paths = (result.data or {}).get("index_paths") or {}
    out = [f'<div class="tk" aria-label="{escape(layer_label(result, layer))}, top-{escape(k)} images">']
    for row in rows:
        out.append(f'<p class="tk-h">{escape(row.title)}</p>')
        for who, model, cells in (("base", pair[0], row.sides[0]), ("tuned", pair[1], row.sides[1])):
            out.append(f'<div class="tk-row"><span class="tk-m">{who}: {escape(model)}</span>')
            if not any(i >= 0 for i, _ in cells):
                out.append('<span class="tk-none">no image with a positive score</span>')
            for i, shared in cells:
                if i < 0:
                    continue
                label = escape(_label_of(result, i))
                cls = thumbs.css_class(paths.get(str(i)))
                box = (f'<div class="th {cls}" role="img" aria-label="{label}"></div>' if cls
                       else '<div class="th gone">missing</div>')
                out.append(f'<div class="tk-c{" shared" if shared else ""}">{box}<p title="{label}">{label}</p></div>')
            out.append("</div>")
    out.append("</div>")
    return "".join(out)


def _pair_value(result: Result, pair: tuple[str, str], layer: str, test: Callable[[Value], bool]) -> Value | None:
    """The first pair value at ``layer`` that passes ``test`` (the grids read values by what they hold)."""
    return next((v for v in result.values if v.scope == "pair" and (v.base, v.tuned) == pair and v.layer == layer
                 and test(v)), None)


def report_channels(result: Result, pair: tuple[str, str], layer: str) -> list[tuple[int, str]]:
    """The channels the report shows for a pair and layer: the most-changed filters, then the lowest, median and
    highest top-k overlap among channels with a positive image.

    A weight-change value (``most_changed_filters``, e.g. ``weight_l2``) lists most-changed filters per module;
    the layer's channels are taken from its last measured module, whose filters are the layer's last channels (the
    whole output for a plain conv block, the last branch of a concatenation, or the projection of a residual block).
    """
    sets = [topk_sets(result, layer, m) for m in pair]
    if sets[0] is None or sets[1] is None:
        return []
    n_ch = sets[0][1].shape[0]
    picks: list[tuple[int, str]] = []
    wl2 = _pair_value(result, pair, layer, lambda v: "most_changed_filters" in v.arrays)
    if wl2 is not None:
        mods, filt, top = (wl2.arrays.get(k, []) for k in ("modules", "filter_relative", "most_changed_filters"))
        last = max((i for i, f in enumerate(filt) if f), default=None)
        if last is not None and len(filt[last]) <= n_ch:
            offset = n_ch - len(filt[last])
            for f in top[last] if last < len(top) else []:
                r = filt[last][f]
                picks.append((offset + int(f), f"most changed filter of {mods[last]} (r={r:.3g})"))
    pv = _pair_value(result, pair, layer, lambda v: bool(k_keys([v], "overlap")))
    if pv is not None:
        ks = k_keys([pv], "overlap")
        ov = as_float_array(pv.arrays.get(f"overlap@{ks[-1]}")) if ks else np.zeros(0)
        alive = np.flatnonzero(((sets[0][1] >= 0).any(axis=1) | (sets[1][1] >= 0).any(axis=1))[: ov.size]
                               & ~np.isnan(ov))
        if alive.size:
            vals = ov[alive]
            order = alive[np.lexsort((alive, vals))]  # by overlap, ties by channel index
            for name, c in (("lowest", order[0]), ("median", order[(len(order) - 1) // 2]), ("highest", order[-1])):
                picks.append((int(c), f"{name} overlap ({ov[c]:.0f}%)"))
    merged: dict[int, list[str]] = {}
    for c, why in picks:
        if 0 <= c < n_ch:
            merged.setdefault(c, []).append(why)
    return [(c, " & ".join(whys)) for c, whys in merged.items()]


def render_grids(result: Result, out_dir: str | Path, *, show: int = 8, max_pairs: int | None = 1) -> list[Figure]:
    """One grid per (pair, layer) with top-k images: the channels of :func:`report_channels`.

    Only the first ``max_pairs`` pairs get grids (default: the first, base against the first tuned model), which
    keeps a many-pair report readable and its size bounded; ``ftprobe top-images`` draws any other pair.
    """
    out = Path(out_dir)
    figs: list[Figure] = []
    if not (result.data or {}).get("index_paths"):
        return figs
    pairs = result.pairs if max_pairs is None else result.pairs[:max_pairs]
    for p_i, (b, t) in enumerate(pairs, start=1):
        for l_i, layer in enumerate(layer_order(result), start=1):
            picks = report_channels(result, (b, t), layer)
            if not picks:
                continue
            k = topk_sets(result, layer, b)[0]  # type: ignore[index]
            path = out / f"grid_pair{p_i}_layer{l_i}_{slug(layer, 24)}.png"
            spec = GridSpec((b, t), layer, tuple(c for c, _ in picks), tuple(why for _, why in picks),
                            min(show, _width(k, show)))
            draw_topk_grid(result, layer, spec.channels, path, pair=spec.pair, show=spec.show, notes=spec.notes)
            figs.append(Figure(path, "grids", f"{layer_label(result, layer)} · {pair_label(b, t)}", grid=spec))
    return figs


def _width(k: str, show: int) -> int:
    return int(k) if k.isdigit() else show
