"""Grids (a row per model, a column per channel, captions) and the HTML report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ftprobe.viz import FeatureVis, Pick, feature_grid, make_grid, save_feature_grid, visualization_section


def _vis(model: str, colour: int, channels=(3, 17)) -> FeatureVis:
    images = torch.zeros(len(channels), 3, 16, 16)
    images[:, colour] = 1.0
    return FeatureVis(model, "inception4d", "mixed4d", tuple(channels), images, torch.tensor([1.5, 2.5]),
                      torch.zeros(4, 2), {"steps": 4, "size": 16, "seed": 0, "preprocess": "imagenet"})


def test_grid_places_each_image_in_its_row_and_column():
    rows = [torch.zeros(3, 3, 8, 8), torch.ones(3, 3, 8, 8)]
    rows[0][1, 0] = 1.0  # row 0, column 1 is red
    grid = make_grid(rows, ["base", "tuned"], [["a", "b", "c"], ["d", "e", "f"]], cell=32)
    arr = np.asarray(grid)
    red = np.argwhere((arr[..., 0] == 255) & (arr[..., 1] == 0) & (arr[..., 2] == 0))
    black = np.argwhere(arr.sum(axis=-1) == 0)
    assert len(red) == 32 * 32  # one cell, upscaled 4x with nearest neighbours
    assert red[:, 1].min() > black[:, 1].min()  # to the right of column 0's black cell, on the same rows
    assert set(red[:, 0]) <= set(black[:, 0])
    assert grid.size[1] > 2 * 32 and grid.mode == "RGB"


def test_feature_grid_captions_and_default_title_differ_with_pick():
    vis = [_vis("base", 0), _vis("tuned", 2)]
    pick = Pick((3, 17), (0.5, 0.25), "overlap@100", ("lowest", "highest"), "overlap@100 of base → tuned")
    plain, picked = feature_grid(vis), feature_grid(vis, pick)
    assert picked.size[1] > plain.size[1]  # the second caption line
    with pytest.raises(ValueError):
        make_grid([torch.zeros(2, 3, 8, 8)], ["a"], [["only one caption"]])


def test_save_writes_png_and_json_and_section_references_them(tmp_path):
    vis = [_vis("base", 0), _vis("tuned <b>", 1)]
    pick = Pick((3, 17), (0.7, 0.1), "r", ("most changed #1", "most changed #2"), "r_c of inception4d.branch1.conv")
    png = save_feature_grid(vis, tmp_path / "grids" / "g.png", pick)
    assert Image.open(png).size[0] > 0
    meta = json.loads(png.with_suffix(".json").read_text())
    assert meta["channels"] == [3, 17] and meta["models"] == ["base", "tuned <b>"]
    assert meta["activation"]["base"] == [1.5, 2.5] and meta["pick"]["measure"] == "r"
    title, fragment, paths = visualization_section([png])
    assert title == "Feature visualisation" and paths == [png]
    # the report embeds the PNGs itself (data URIs); the fragment must not point at files the page cannot load
    assert "<img" not in fragment and "tuned &lt;b&gt;" in fragment and "<b>" not in fragment
    assert "inception4d (mixed4d), channels 3, 17" in fragment
    _, custom, _ = visualization_section([png], title="T", captions=["x & y"])
    assert "x &amp; y" in custom
    with pytest.raises(ValueError):
        visualization_section([png], captions=["a", "b"])
