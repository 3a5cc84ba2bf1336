"""The study's figures: which are drawn, and that they plot the result's own numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ftprobe.core.results import Result
from ftprobe.report import figures, render_figures
from ftprobe.report._access import as_float_array, k_keys

METRIC_FIGURES = {
    "cka_per_layer.png", "cka_cross_pair1.png", "cka_cross_pair2.png", "weight_change.png",
    "topk_overlap_k3.png", "topk_overlap_k5.png", "class_concentration_k3.png", "class_concentration_k5.png",
    "overlap_vs_concentration_k3.png", "overlap_vs_concentration_k5.png",
}


def test_every_figure_of_the_result_is_a_png(report_result: Result, report_dir: Path) -> None:
    pngs = {p.name: p for p in (report_dir / "figures").glob("*.png")}
    grids = {n for n in pngs if n.startswith("grid_")}
    # an installed plugin's metrics ran too, and have their own figures (named after the metric)
    plugins = [m for m, rec in report_result.metrics.items() if rec["provider"] != "ftprobe"]
    theirs = {n for n in pngs if any(n.startswith(m + "_") for m in plugins)}
    assert all(any(n.startswith(m + "_") for n in theirs) for m in plugins)
    assert set(pngs) - grids - theirs == METRIC_FIGURES
    assert len(grids) == 1 * 3  # one per layer, for the first pair only (the default max_pairs=1)
    for p in pngs.values():
        with Image.open(p) as img:
            assert img.format == "PNG" and min(img.size) > 150, p.name


def test_weight_only_result_gets_only_the_weight_figure(report_result: Result, tmp_path: Path) -> None:
    res = dataclasses.replace(
        report_result, data=None, metrics={"weight_l2": report_result.metrics["weight_l2"]},
        values=[v for v in report_result.values if v.metric == "weight_l2"])
    assert render_figures(res, tmp_path / "figs") == [tmp_path / "figs" / "weight_change.png"]
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["weight_change.png"]


def _pair(result: Result, metric: str, layer: str, tuned: str):
    return next(v for v in result.values if v.metric == metric and v.scope == "pair" and v.layer == layer
                and v.tuned == tuned)


def test_cka_lines_are_the_per_layer_values(report_result: Result, drawn, tmp_path: Path) -> None:
    figures.cka_per_layer(report_result, tmp_path)
    ax = drawn["cka_per_layer.png"].axes[0]
    layers = [r["name"] for r in report_result.layers]
    pairs = [line for line in ax.get_lines() if not line.get_label().startswith("_")]  # the legend's lines
    chance = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(pairs) == len(report_result.pairs) == len(chance)
    for line, dotted, (_, tuned) in zip(pairs, chance, report_result.pairs):
        want = [_pair(report_result, "cka", n, tuned).scalars["cka"] for n in layers]
        np.testing.assert_allclose(line.get_ydata(), want)
        shuffled = [_pair(report_result, "cka", n, tuned).scalars["cka_shuffled"] for n in layers]
        np.testing.assert_allclose(dotted.get_ydata(), shuffled)
    assert [t.get_text() for t in ax.get_xticklabels()] == [r["spec"] for r in report_result.layers]


def test_weight_change_draws_every_module_in_layer_order(report_result: Result, drawn, tmp_path: Path) -> None:
    figures.weight_change(report_result, tmp_path)
    raw_ax, rel_ax = drawn["weight_change.png"].axes[:2]
    layers = [r["name"] for r in report_result.layers]
    tuned = report_result.pairs[1][1]
    vals = [_pair(report_result, "weight_l2", n, tuned) for n in layers]
    np.testing.assert_allclose(raw_ax.get_lines()[1].get_ydata(), np.concatenate([v.arrays["module_l2"] for v in vals]))
    np.testing.assert_allclose(rel_ax.get_lines()[1].get_ydata(),
                               np.concatenate([v.arrays["module_relative"] for v in vals]))
    n_modules = sum(len(v.arrays["modules"]) for v in vals)
    assert len(rel_ax.get_xticklabels()) == n_modules == len(layers)  # TinyNet: one conv per block


def test_overlap_boxes_mark_the_mean_of_each_pair(report_result: Result, drawn, tmp_path: Path) -> None:
    figures.topk_overlap(report_result, tmp_path)
    ax = drawn["topk_overlap_k5.png"].axes[0]
    means = [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_marker() == "D"]
    layers = [r["name"] for r in report_result.layers]
    want = [_pair(report_result, "topk_overlap", n, t).scalars["overlap_mean@5"]
            for _, t in report_result.pairs for n in layers]
    np.testing.assert_allclose(means, want)


def test_concentration_boxes_leave_dead_channels_out(report_result: Result, drawn, tmp_path: Path) -> None:
    figures.class_concentration(report_result, tmp_path)
    ax = drawn["class_concentration_k3.png"].axes[0]
    means = [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_marker() == "D"]
    want = [v.scalars["entropy_mean@3"] for m in report_result.models for v in report_result.values
            if v.metric == "class_concentration" and v.scope == "model" and v.model == m["label"]]
    np.testing.assert_allclose(means, want)  # NaN (dead) channels dropped, as the metric's own mean


def test_scatter_has_one_point_per_channel_alive_in_the_tuned_model(report_result: Result, drawn,
                                                                    tmp_path: Path) -> None:
    figures.overlap_vs_concentration(report_result, tmp_path)
    axes = drawn["overlap_vs_concentration_k5.png"].axes
    for ax, (_, tuned) in zip(axes, report_result.pairs):
        points = sum(len(c.get_offsets()) for c in ax.collections)
        alive = sum(int((~np.isnan(as_float_array(v.arrays["entropy@5"]))).sum()) for v in report_result.values
                    if v.metric == "class_concentration" and v.scope == "model" and v.model == tuned)
        assert points == alive > 0


@pytest.mark.parametrize(("keys", "expect"), [
    pytest.param(["overlap@100", "overlap@5", "overlap@all", "overlap@20"], ["5", "20", "100", "all"], id="numeric"),
    pytest.param(["overlap_mean@5", "topk_index@5"], [], id="other-keys"),
])
def test_k_keys_sort_numerically_with_all_last(keys: list[str], expect: list[str]) -> None:
    from ftprobe.core.results import Value

    assert k_keys([Value("m", "l", "pair", "a", "b", arrays={k: [] for k in keys})], "overlap") == expect


def test_as_float_array_turns_json_nulls_into_nan() -> None:
    a = as_float_array([[1, None], [None, 2.5]])
    assert a.dtype == np.float64 and np.isnan(a[0, 1]) and np.isnan(a[1, 0]) and a[1, 1] == 2.5
