"""Decoding: every mode becomes RGB, unreadable files are skipped and counted (also from worker processes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ftprobe.core.errors import DataError
from ftprobe.data import UnreadableImage, load_rgb, open_data


def _mode_image(mode: str) -> Image.Image:
    rng = np.random.default_rng(3)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (9, 13), dtype=np.uint16))
    base = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    return base.convert(mode) if mode != "P" else base.convert("P", palette=Image.Palette.ADAPTIVE)


MODES = {"L": "png", "LA": "png", "P": "gif", "RGBA": "png", "CMYK": "jpeg", "I;16": "png", "1": "bmp"}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_loads_as_three_channels(tmp_path: Path, mode: str) -> None:
    img = _mode_image(mode)
    ext = {"jpeg": "jpg"}.get(MODES[mode], MODES[mode])
    img.save(tmp_path / f"a.{ext}", format=MODES[mode].upper())
    reopened_mode = Image.open(tmp_path / f"a.{ext}").mode
    assert reopened_mode.split(";")[0] == mode.split(";")[0] or mode in ("1",), reopened_mode
    src = open_data(tmp_path, size=8, preprocess="none")
    (batch,) = list(src.batches())
    assert batch.x.shape == (1, 3, 8, 8) and batch.x.dtype == torch.float32
    assert torch.isfinite(batch.x).all() and src.skipped == []


def test_palette_with_transparency_loads_without_warning(tmp_path: Path) -> None:
    img = _mode_image("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png", transparency=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_rgb(tmp_path / "t.png").mode == "RGB"


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 128, 255, round(1000 / 257)])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty"])
def test_load_rgb_raises_unreadable_with_a_reason(tmp_path: Path, helpers: SimpleNamespace, kind: str) -> None:
    bad = helpers.write_bad_files(tmp_path)
    with pytest.raises(UnreadableImage) as e:
        load_rgb(bad[kind])
    assert e.value.path == str(bad[kind]) and e.value.reason


@pytest.mark.parametrize("workers", [0, 2], ids=["workers0", "workers2"])
def test_bad_files_are_skipped_and_counted(tmp_path: Path, helpers: SimpleNamespace, workers: int) -> None:
    root = tmp_path / "d"
    for i in range(5):
        helpers.write_id_image(root / f"ok{i}.png", i)
    bad = helpers.write_bad_files(root)
    src = open_data(root, size=6, preprocess="none", batch_size=3, workers=workers)
    assert src.num_samples == 8
    batches = list(src.batches())
    assert [len(b) for b in batches] == [3, 2]  # re-batched to full batches despite the skips
    got = {src.path_of(i) for b in batches for i in b.index.tolist()}
    assert got == {str(root / f"ok{i}.png") for i in range(5)}
    assert sorted(p for p, _ in src.skipped) == sorted(str(p) for p in bad.values())
    assert all(reason for _, reason in src.skipped)
    assert src.describe()["skipped"] == 3
    for b in batches:  # pixels match the index each sample carries
        for x, i in zip(b.x.numpy(), b.index.tolist()):
            assert helpers.ident_of(x) == int(Path(src.path_of(i)).stem[2:])


def test_skipped_grows_while_iterating(tmp_path: Path, helpers: SimpleNamespace) -> None:
    root = tmp_path / "d"
    helpers.write_id_image(root / "a.png", 1)
    (root / "b.png").write_bytes(b"garbage")
    helpers.write_id_image(root / "c.png", 2)
    src = open_data(root, size=4, batch_size=1)
    it = src.batches()
    next(it)
    assert src.skipped == []
    next(it)
    assert [Path(p).name for p, _ in src.skipped] == ["b.png"]
    assert list(it) == []
    assert len(src.skipped) == 1  # a second pass starts its own count
    list(src.batches())
    assert len(src.skipped) == 1


@pytest.mark.parametrize("limit_pixels", [2000, 4000], ids=["bomb-error", "bomb-warning"])
def test_decompression_bomb_is_skipped_not_fatal(
    tmp_path: Path, helpers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, limit_pixels: int
) -> None:
    root = tmp_path / "d"
    helpers.write_id_image(root / "small.png", 1, size=(10, 10))  # 100 px
    helpers.write_id_image(root / "bomb.png", 2, size=(80, 60))  # 4800 px: > 2x 2000 (error), > 4000 (warning)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit_pixels)
    src = open_data(root, size=4)
    batches = list(src.batches())
    assert sum(len(b) for b in batches) == 1
    ((path, reason),) = src.skipped
    assert path.endswith("bomb.png") and "decompression bomb" in reason


def test_all_unreadable_raises_after_iterating(tmp_path: Path, helpers: SimpleNamespace) -> None:
    helpers.write_bad_files(tmp_path / "d")
    src = open_data(tmp_path / "d", size=4)
    with pytest.raises(DataError, match="No readable sample") as e:
        list(src.batches())
    assert "truncated.png" in str(e.value) or "corrupt.jpg" in str(e.value)
    assert len(src.skipped) == 3
