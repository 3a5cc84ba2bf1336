"""Top-image grids: which channels the report shows, frames on shared images, labels, missing files."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ftprobe.core.errors import FtprobeError
from ftprobe.core.results import Result, Value
from ftprobe.report import draw_topk_grid, report_channels
from ftprobe.report import grids as G
from ftprobe.report._access import as_float_array

ORANGE = (0xE6, 0x61, 0x00)


def _synthetic(paths: list[str]) -> Result:
    """Two channels: channel 0 has the same top-3 images in both models (reordered), channel 1 none in common."""
    vals = [
        Value("topk_overlap", "blk", "model", model="a", arrays={"topk_index@3": [[0, 1, 2], [3, 4, -1]]}),
        Value("topk_overlap", "blk", "model", model="b", arrays={"topk_index@3": [[2, 1, 0], [5, 6, 7]]}),
        Value("topk_overlap", "blk", "pair", base="a", tuned="b", arrays={"overlap@3": [100.0, 0.0]}),
    ]
    return Result(models=[{"label": "a"}, {"label": "b"}], pairs=[("a", "b")],
                  layers=[{"spec": "alias_blk", "name": "blk", "alias": True}],
                  data={"kind": "image_folder", "classes": ["c0", "c1"],
                        "index_paths": {str(i): p for i, p in enumerate(paths)}},
                  values=vals)


def _cell_origin(row: int, col: int, show: int) -> tuple[int, int]:
    """Top-left pixel (y, x) of a grid cell; columns ≥ show are the tuned model's."""
    step = G._CELL + 2 * G._PAD
    side, j = divmod(col, show)
    x = side * (show * step + G._GAP) + j * step + G._PAD
    y = G._HEAD + row * (G._TITLE + step + G._LABEL) + G._TITLE + G._PAD
    return y, x


def _framed(img: np.ndarray, row: int, col: int, show: int) -> bool:
    y, x = _cell_origin(row, col, show)
    return tuple(img[y - 2, x + G._CELL // 2]) == ORANGE


@pytest.fixture
def image_paths(hostile_images: Path) -> list[str]:
    return [str(p) for p in sorted(hostile_images.rglob("*.png"))][:8]


def test_shared_images_are_framed_and_others_not(image_paths: list[str], tmp_path: Path) -> None:
    path = draw_topk_grid(_synthetic(image_paths), "blk", [0, 1], tmp_path / "g.png", show=3)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert all(_framed(img, 0, c, 3) for c in range(6))
    assert not any(_framed(img, 1, c, 3) for c in range(6))
    y, x = _cell_origin(1, 2, 3)  # base channel 1 has only two images: the third cell stays white
    assert (img[y + 10 : y + 20, x + 10 : x + 20] == 255).all()


def test_missing_files_are_grey_placeholders(image_paths: list[str], tmp_path: Path) -> None:
    res = _synthetic([str(tmp_path / "gone.png")] + image_paths[1:])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    res.data["index_paths"]["1"] = str(tmp_path / "broken.png")
    img = np.asarray(Image.open(draw_topk_grid(res, "blk", [0], tmp_path / "g.png", show=3)).convert("RGB"))
    for col in (0, 1):  # index 0 missing, index 1 unreadable
        y, x = _cell_origin(0, col, 3)
        assert (img[y + 4, x + 4] == 153).all()
    y, x = _cell_origin(0, 2, 3)
    assert not (img[y + 4 : y + 40, x + 4 : x + 40] == 153).all()  # a real image


def test_page_grid_frames_shared_images_and_marks_missing_ones(image_paths: list[str], tmp_path: Path) -> None:
    res = _synthetic([str(tmp_path / "gone.png")] + image_paths[1:])
    thumbs = G.Thumbnails()
    html = G.grid_html(res, G.GridSpec(("a", "b"), "alias_blk", (0, 1), ("why <0>", ""), show=3), thumbs)
    rows = html.split('<div class="tk-row">')[1:]  # channel 0 base, tuned; channel 1 base, tuned
    assert [r.count('class="tk-c shared"') for r in rows] == [3, 3, 0, 0]
    assert [r.count('class="tk-c') for r in rows] == [3, 3, 2, 3]  # base channel 1 has two images
    assert [r.count('<div class="th gone">missing</div>') for r in rows] == [1, 1, 0, 0]  # sample 0, in both
    assert "channel 0: why &lt;0&gt; · 3 of top-3 in both" in html
    cells = re.findall(r'class="th (t\d+)"', html)
    assert len(cells) == 9 and set(cells) == {f"t{i}" for i in range(7)}  # 7 readable files, 2 of them shown twice
    assert len(re.findall(r"\.t\d+\{background-image:url\(data:image/", thumbs.css())) == 7


def test_alias_layer_names_and_channel_range(image_paths: list[str], tmp_path: Path) -> None:
    assert draw_topk_grid(_synthetic(image_paths), "alias_blk", [1], tmp_path / "a.png", show=2).is_file()
    with pytest.raises(FtprobeError, match=r"has 2 channels; pick channels in 0\.\.1 \(got \[2\]\)"):
        draw_topk_grid(_synthetic(image_paths), "blk", [0, 2], tmp_path / "b.png")
    with pytest.raises(FtprobeError, match="no top-k images of layer 'other'"):
        draw_topk_grid(_synthetic(image_paths), "other", [0], tmp_path / "c.png")


def test_labels_come_from_index_labels_then_class_folders(report_result: Result, names) -> None:
    res = copy.deepcopy(report_result)
    first = min(res.data["index_paths"], key=int)
    folder = Path(res.data["index_paths"][first]).parent.name
    assert folder in names.classes and G._label_of(res, int(first)) == folder
    res.data["index_labels"] = {first: [0, 2]}
    assert G._label_of(res, int(first)) == f"{res.data['classes'][0]}, {res.data['classes'][2]}"
    res.data["kind"] = "csv"
    del res.data["index_labels"]
    assert G._label_of(res, int(first)) == Path(res.data["index_paths"][first]).name


def test_report_channels_most_changed_then_overlap_extremes(report_result: Result) -> None:
    pair = tuple(report_result.pairs[0])
    picks = report_channels(report_result, pair, "mixed4d")
    wl2 = next(v for v in report_result.values if v.metric == "weight_l2" and v.layer == "mixed4d"
               and (v.base, v.tuned) == pair)
    # TinyNet's block has one conv whose filters are the layer's channels (offset 0)
    assert [c for c, why in picks if "most changed" in why] == wl2.arrays["most_changed_filters"][-1]
    ov = as_float_array(next(v for v in report_result.values if v.metric == "topk_overlap" and v.scope == "pair"
                             and v.layer == "mixed4d" and (v.base, v.tuned) == pair).arrays["overlap@5"])
    sets = [G.topk_sets(report_result, "mixed4d", m)[1] for m in pair]
    alive = (sets[0] >= 0).any(axis=1) | (sets[1] >= 0).any(axis=1)
    low = next(c for c, why in picks if "lowest overlap" in why)
    high = next(c for c, why in picks if "highest overlap" in why)
    assert ov[low] == ov[alive].min() and ov[high] == ov[alive].max() and alive[low] and alive[high]
    assert len({c for c, _ in picks}) == len(picks)  # a channel picked twice is one row with both reasons
