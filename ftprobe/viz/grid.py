"""Image grids of feature visualisations (one row per model, one column per channel) and their report section."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .featvis import FeatureVis
from .pick import Pick

__all__ = ["feature_grid", "make_grid", "save_feature_grid", "visualization_section"]

_BG, _FG = (255, 255, 255), (20, 20, 20)


def _font(size: int = 12) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=2)
    return int(right - left), int(bottom - top)


def _to_pil(img: Tensor, cell: int) -> Image.Image:
    arr = (img.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr)
    if pil.size != (cell, cell):
        exact = cell % pil.size[0] == 0 and cell % pil.size[1] == 0
        pil = pil.resize((cell, cell), Image.Resampling.NEAREST if exact else Image.Resampling.LANCZOS)
    return pil


def make_grid(rows: Sequence[Tensor], row_labels: Sequence[str], captions: Sequence[Sequence[str]], *,
              cell: int | None = None, title: str | None = None, pad: int = 6) -> Image.Image:
    """Lay out images in a captioned grid.

    Args:
        rows: one ``(K, 3, H, W)`` RGB ``[0, 1]`` tensor per row (every row has ``K`` images).
        row_labels: the label on the left of each row (the model).
        captions: ``[row][column]`` text under each image (may hold newlines).
        cell: side of each image in the grid (default: the image side, at least 128 px; integer factors upscale
            with nearest neighbours so pixels stay visible).
        title: a line above the grid.

    Returns:
        An RGB ``PIL.Image``.
    """
    if not rows or len(row_labels) != len(rows) or len(captions) != len(rows):
        raise ValueError("make_grid needs one label and one caption list per row")
    k = rows[0].shape[0]
    if any(r.shape[0] != k or len(c) != k for r, c in zip(rows, captions)):
        raise ValueError("every row needs the same number of images and captions")
    side = int(rows[0].shape[-1])
    cell = cell or max(side * max(1, 128 // side), side)
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, s, font)[0] for s in row_labels) + 2 * pad
    cap_h = max(_text_size(probe, c, font)[1] for row in captions for c in row) + pad
    col_w = max(cell, max(_text_size(probe, c, font)[0] for row in captions for c in row)) + pad
    title_h = _text_size(probe, title, font)[1] + 2 * pad if title else 0
    row_h = cell + cap_h + pad
    grid = Image.new("RGB", (label_w + k * col_w + pad, title_h + len(rows) * row_h + pad), _BG)
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((pad, pad), title, fill=_FG, font=font)
    for r, (images, label, caps) in enumerate(zip(rows, row_labels, captions)):
        y = title_h + pad + r * row_h
        draw.multiline_text((pad, y + cell // 2 - 6), label, fill=_FG, font=font, spacing=2)
        for c in range(k):
            x = label_w + c * col_w + (col_w - cell) // 2
            grid.paste(_to_pil(images[c], cell), (x, y))
            tw = _text_size(draw, caps[c], font)[0]
            draw.multiline_text((label_w + c * col_w + (col_w - tw) // 2, y + cell + 3), caps[c], fill=_FG,
                                font=font, spacing=2, align="center")
    return grid


def feature_grid(vis: Sequence[FeatureVis], pick: Pick | None = None, *, cell: int | None = None,
                 title: str | None = None) -> Image.Image:
    """The study's grid: one row per model, one column per channel, each captioned ``layer:channel`` (the layer as
    asked for, e.g. ``mixed4d``) and, with a :class:`~ftprobe.viz.pick.Pick`, the value that chose it (``r=…`` or
    ``overlap@K=…``, with the role of overlap picks)."""
    if not vis:
        raise ValueError("feature_grid needs at least one FeatureVis")
    layer = vis[0].spec or vis[0].layer  # the name the user asked for (mixed4d); the title gives both
    captions = []
    for v in vis:
        row = []
        for i, ch in enumerate(v.channels):
            text = f"{layer}:{ch}"
            if pick is not None and i < len(pick.values) and pick.channels[i] == ch:
                text += f"\n{pick.caption(i)}"
                if not pick.roles[i].startswith("most changed"):
                    text += f" ({pick.roles[i]})"
            row.append(text)
        captions.append(row)
    if title is None:
        s = vis[0].settings
        alias = f" ({vis[0].spec})" if vis[0].spec != vis[0].layer else ""
        title = (f"{vis[0].layer}{alias}: {s.get('steps')} steps, {s.get('size')} px, seed {s.get('seed')}, "
                 f"{s.get('preprocess')} preprocessing")
    return make_grid([v.images for v in vis], [v.model for v in vis], captions, cell=cell, title=title)


def save_feature_grid(vis: Sequence[FeatureVis], path: str | os.PathLike[str], pick: Pick | None = None, *,
                      cell: int | None = None) -> Path:
    """Write the grid PNG and, beside it, ``<name>.json`` (models, layer, channels, values, activations, settings).

    Returns:
        The PNG path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feature_grid(vis, pick, cell=cell).save(path)
    meta = {
        "layer": vis[0].layer, "spec": vis[0].spec, "channels": list(vis[0].channels),
        "models": [v.model for v in vis],
        "activation": {v.model: [float(a) for a in v.activation] for v in vis},
        "pick": None if pick is None else {"measure": pick.measure, "values": list(pick.values),
                                           "roles": list(pick.roles), "source": pick.source},
        "settings": vis[0].settings,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return path


def _describe(png: Path) -> str:
    meta_path = png.with_suffix(".json")
    if not meta_path.exists():
        return png.stem
    m = json.loads(meta_path.read_text())
    s = m.get("settings", {})
    alias = f" ({m['spec']})" if m.get("spec") and m["spec"] != m.get("layer") else ""
    chosen = ""
    if m.get("pick"):
        chosen = f", chosen by {m['pick']['source']}"
    return (f"{m.get('layer')}{alias}, channels {', '.join(map(str, m.get('channels', [])))}{chosen}; rows: "
            f"{', '.join(m.get('models', []))}; {s.get('steps')} steps at {s.get('size')} px, seed {s.get('seed')}")


def visualization_section(grids: Sequence[str | os.PathLike[str]], *, title: str = "Feature visualisation",
                          captions: Sequence[str] | None = None) -> tuple[str, str, list[Path]]:
    """A report section for ``ftprobe.report.write_report(extra_sections=[...])``.

    The report embeds the listed PNGs itself (as data URIs: the page is one self-contained file); the fragment holds
    the explanation and one caption per grid, in the order of the images. Captions default to a description read
    from the ``.json`` that :func:`save_feature_grid` writes.

    Returns:
        ``(title, html_fragment, [png paths])``; the fragment is escaped here and safe to insert as is.
    """
    paths = [Path(p) for p in grids]
    if captions is not None and len(captions) != len(paths):
        raise ValueError("give one caption per grid")
    parts = ['<div class="ftprobe-featvis">',
             "<p>Images optimised to maximise one channel each (Lucid's method: Fourier parameterisation with "
             "colour decorrelation, random pad/jitter/scale/rotation, Adam). One row per model, one column per "
             "channel. The grids below, in order:</p><ol>"]
    for i, p in enumerate(paths):
        cap = captions[i] if captions is not None else _describe(p)
        parts.append(f"<li>{html.escape(cap)}</li>")
    parts.append("</ol></div>")
    return title, "\n".join(parts), paths
