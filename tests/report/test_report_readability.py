"""Figures stay readable in report.html at every size: the demo's 9 one-conv blocks and a ViT's 48 modules in 12
blocks, one pair and five.

"Readable" is measured: a figure is no wider than the report's content box, so the page shows it at its own pixel
size, and then its smallest text (8 pt at the figures' 100 dpi) is 11 CSS pixels; tick labels are distinct and their
drawn boxes do not overlap.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from ftprobe.core.results import Result, Value
from ftprobe.report import figures, write_report

CONTENT_PX = 1094  # report.html's content box for a figure: main 1180 px − 2×24 padding − 2×18 section padding − 2
MIN_CSS_PX = 11.0  # smallest text a figure may show on the page

DEMO_BLOCKS = ("conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed5a", "mixed5b")
DEMO = {b: [f"{b}.0"] for b in DEMO_BLOCKS}  # Conv → BN → ReLU blocks: the conv is module "0" of its block
VIT = {f"blocks.{i}": [f"blocks.{i}.{m}" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")] for i in range(12)}
PAIRS_5 = [("pretrained", "mode_a1"), ("mode_a1", "mode_a2"), ("mode_a1", "mode_b"), ("scratch_init", "scratch"),
           ("pretrained", "scratch")]


def _result(modules: dict[str, list[str]], pairs: list[tuple[str, str]], channels: int = 24) -> Result:
    """Weight change of every module, top-20 overlap and tuned concentration of every layer, for each pair."""
    rng = np.random.default_rng(0)
    labels = list(dict.fromkeys(m for p in pairs for m in p))
    values = []
    for b, t in pairs:
        for layer, mods in modules.items():
            l2 = rng.uniform(0.1, 5.0, len(mods))
            values.append(Value("weight_l2", layer, "pair", base=b, tuned=t, scalars={"l2": float(l2.sum())},
                                arrays={"modules": mods, "module_l2": l2.tolist(),
                                        "module_relative": (l2 / 50).tolist()}))
            values.append(Value("topk_overlap", layer, "pair", base=b, tuned=t,
                                arrays={"overlap@20": rng.uniform(0, 100, channels).round().tolist()}))
    for m in labels:
        for layer in modules:
            values.append(Value("class_concentration", layer, "model", model=m,
                                arrays={"entropy@20": rng.uniform(0, 1, channels).tolist()}))
    return Result(models=[{"label": m} for m in labels], pairs=pairs,
                  layers=[{"spec": n, "name": n, "alias": False} for n in modules],
                  metrics={k: {"options": {}} for k in ("weight_l2", "topk_overlap", "class_concentration")},
                  values=values, run={"versions": {"ftprobe": "test"}})


def _boxes_overlap(texts: list[Text], renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:]
            if ba.x0 < bb.x1 - 0.5 and bb.x0 < ba.x1 - 0.5 and ba.y0 < bb.y1 - 0.5 and bb.y0 < ba.y1 - 0.5]


def _readable(fig, png: Path) -> None:
    """The PNG fits the page (shown 1:1) and no text of the figure is smaller than MIN_CSS_PX there."""
    with Image.open(png) as img:
        width, dpi = img.size[0], img.info.get("dpi", (72, 72))[0]
    assert width <= CONTENT_PX, f"{png.name}: {width} px wide, so the page shrinks it"
    scale = min(1.0, CONTENT_PX / width)
    small = {t.get_text(): t.get_fontsize() * dpi / 72 * scale for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() * dpi / 72 * scale < MIN_CSS_PX}
    assert not small, f"{png.name}: text below {MIN_CSS_PX} CSS px: {small}"


def _renderer(fig):
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return canvas.get_renderer()


@pytest.mark.parametrize(("modules", "pairs"), [
    pytest.param(DEMO, PAIRS_5, id="demo-9-blocks-5-pairs"),
    pytest.param(VIT, PAIRS_5[:1], id="vit-48-modules"),
    pytest.param({f"stage{i}": [f"stage{i}.{j}.conv" for j in range(40)] for i in range(4)}, PAIRS_5[:2],
                 id="160-modules"),
])
def test_weight_change_ticks_are_distinct_readable_and_apart(modules, pairs, drawn, tmp_path: Path) -> None:
    res = _result(modules, pairs)
    (fig_rec,) = figures.weight_change(res, tmp_path)
    fig = drawn["weight_change.png"]
    renderer = _renderer(fig)
    ticks = [t for ax in fig.axes for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    names = [t.get_text() for t in ticks]
    every = [m for mods in modules.values() for m in mods]
    assert len(names) == len(set(names)) == len(every), "every module gets its own, distinct tick label"
    assert all(not n.isdigit() for n in names), names  # an index inside a block says nothing alone
    for name, full in zip(names, every):
        assert full.endswith(name), (name, full)  # a suffix of the module's path
    assert not _boxes_overlap(ticks, renderer)
    bands = [t for ax in fig.axes for t in ax.texts]  # the layer names over their bands
    assert not _boxes_overlap(bands, renderer)
    _readable(fig, fig_rec.path)


def test_weight_change_tick_labels_of_the_demo_name_their_block(drawn, tmp_path: Path) -> None:
    figures.weight_change(_result(DEMO, PAIRS_5[:1]), tmp_path)
    ax = drawn["weight_change.png"].axes[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{b}.0" for b in DEMO_BLOCKS]


@pytest.mark.parametrize("n_pairs", [1, 2, 5, 7])
def test_overlap_vs_concentration_panels_keep_their_text_size(n_pairs: int, drawn, tmp_path: Path) -> None:
    pairs = (PAIRS_5 + [("pretrained", "mode_b"), ("mode_a2", "mode_b")])[:n_pairs]
    (fig_rec,) = figures.overlap_vs_concentration(_result(DEMO, pairs), tmp_path)
    fig = drawn["overlap_vs_concentration_k20.png"]
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == n_pairs
    renderer = _renderer(fig)
    for ax in panels:
        assert not _boxes_overlap(ax.get_xticklabels() + ax.get_yticklabels(), renderer)
    titles = [ax.title for ax in panels] + [ax.xaxis.label for ax in panels] + [ax.yaxis.label for ax in panels]
    assert not _boxes_overlap(titles, renderer)
    _readable(fig, fig_rec.path)
    with Image.open(fig_rec.path) as img:
        assert img.size[0] / img.size[1] < 4, "a grid of panels, not one long strip"


@pytest.mark.parametrize(("modules", "pairs"), [
    pytest.param(DEMO, PAIRS_5, id="demo-5-pairs"),
    pytest.param(VIT, PAIRS_5[:3], id="vit-3-pairs"),
])
def test_box_plots_wrap_layers_instead_of_shrinking(modules, pairs, drawn, tmp_path: Path) -> None:
    res = _result(modules, pairs)
    recs = figures.topk_overlap(res, tmp_path) + figures.class_concentration(res, tmp_path)
    assert len(recs) == 2
    for rec in recs:
        fig = drawn[rec.path.name]
        renderer = _renderer(fig)
        ticks = [t for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text() for t in ticks] == list(modules), "every layer once, in order"
        assert not _boxes_overlap(ticks, renderer)
        _readable(fig, rec.path)


def _cka_result(n_layers: int) -> Result:
    rng = np.random.default_rng(1)
    layers = [f"blocks.{i}" for i in range(n_layers)]
    values = [Value("cka", n, "pair", base="a", tuned="b", scalars={"cka": float(rng.uniform(0.2, 1))}) for n in layers]
    values.append(Value("cka", "*", "pair", base="a", tuned="b",
                        arrays={"cka_cross": rng.uniform(0, 1, (n_layers, n_layers)).tolist(), "layers": layers}))
    return Result(models=[{"label": "a"}, {"label": "b"}], pairs=[("a", "b")],
                  layers=[{"spec": n, "name": n, "alias": False} for n in layers], metrics={"cka": {}}, values=values)


@pytest.mark.parametrize("n_layers", [9, 12, 48])
def test_cka_figures_fit_the_page(n_layers: int, drawn, tmp_path: Path) -> None:
    recs = figures.cka_per_layer(_cka_result(n_layers), tmp_path) + figures.cka_cross(_cka_result(n_layers), tmp_path)
    assert len(recs) == 2
    for rec in recs:
        fig = drawn[rec.path.name]
        renderer = _renderer(fig)
        for ax in fig.axes[:1]:
            assert not _boxes_overlap(ax.get_xticklabels(), renderer), rec.path.name
            assert not _boxes_overlap(ax.get_yticklabels(), renderer), rec.path.name
        _readable(fig, rec.path)


# -- in a browser ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("modules", "pairs"), [
    pytest.param(DEMO, PAIRS_5, id="demo"),
    pytest.param(VIT, PAIRS_5[:3], id="vit"),
])
def test_weight_and_overlap_figures_in_chromium(modules, pairs, tmp_path: Path, chromium, request) -> None:
    """The page shows the figures at their own size (no shrink): 8 pt at 100 dpi is then 11 CSS px on screen."""
    html = write_report(_result(modules, pairs), tmp_path / "report")
    found = chromium.check(html, tmp_path)
    assert found["broken"] == [] and found["images"] >= 4
    shown = dict(zip(found["alts"], zip(found["shown"], found["widths"])))
    for alt in ("Weight change per module", "Overlap against concentration (k=20)"):
        css_w, natural_w = shown[alt]
        assert natural_w <= CONTENT_PX and abs(css_w - natural_w) <= 1, (alt, css_w, natural_w)
        png = tmp_path / "report" / "figures" / ("weight_change.png" if alt.startswith("Weight")
                                                 else "overlap_vs_concentration_k20.png")
        with Image.open(png) as img:
            dpi = img.info["dpi"][0]
        assert 8 * dpi / 72 * css_w / natural_w >= MIN_CSS_PX
    shot = chromium.screenshot(html, tmp_path / "shot.png", tmp_path, size="1280,4200")
    keep = os.environ.get("FTPROBE_SCREENSHOTS")
    if keep:  # a folder to keep the screenshots in, to look at them
        (Path(keep) / f"report_{request.node.callspec.id}.png").write_bytes(shot.read_bytes())
    with Image.open(shot) as img:
        assert img.size == (1280, 4200)
