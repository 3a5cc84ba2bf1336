"""Presets, normalize/denormalize and resize + centre crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from ftprobe.core.errors import DataError
from ftprobe.data import PRESETS, Preset, denormalize, make_transform, normalize, resize_center_crop

PIXEL = (255, 128, 0)  # R, G, B


def _solid(size: tuple[int, int] = (16, 10)) -> Image.Image:
    return Image.new("RGB", size, PIXEL)


def test_caffe_preset_on_a_known_pixel_is_bgr_minus_mean() -> None:
    x = make_transform("caffe", 8)(_solid())
    # hand-computed: B, G, R in 0-255 minus the ImageNet mean in BGR order [103.939, 116.779, 123.68]
    expected = [0 - 103.939, 128 - 116.779, 255 - 123.68]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    for c in range(3):
        torch.testing.assert_close(x[c], torch.full((8, 8), expected[c]), atol=1e-4, rtol=0)


def test_imagenet_preset_on_a_known_pixel() -> None:
    x = make_transform("imagenet", 8)(_solid())
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]  # R, G, B
    for c in range(3):
        torch.testing.assert_close(x[c], torch.full((8, 8), expected[c]), atol=1e-5, rtol=0)


def test_none_preset_is_rgb_in_unit_range() -> None:
    x = make_transform("none", 8)(_solid())
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 3, 6, 6)], ids=["chw", "nchw"])
def test_normalize_denormalize_round_trip(name: str, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = normalize(x, name)
    torch.testing.assert_close(denormalize(y, name), x, atol=1e-12, rtol=0)
    p = PRESETS[name]
    order = [2, 1, 0] if p.channel_order == "BGR" else [0, 1, 2]
    oracle = (x[..., order, :, :] * p.scale - torch.tensor(p.mean, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(
        p.std, dtype=torch.float64
    ).view(3, 1, 1)
    torch.testing.assert_close(y, oracle, atol=1e-12, rtol=0)


def test_normalize_is_differentiable_for_feature_visualisation() -> None:
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    normalize(x, "caffe").sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.full_like(x, 255.0))


def test_custom_preset_object_is_accepted() -> None:
    p = Preset("half", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    torch.testing.assert_close(normalize(torch.ones(3, 1, 1), p), torch.ones(3, 1, 1))


def test_unknown_preset_says_which_exist() -> None:
    with pytest.raises(DataError, match="imagenet, caffe, none"):
        make_transform("inception", 224)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size_is_a_data_error(size: object) -> None:
    with pytest.raises(DataError, match="size"):
        make_transform("none", size)  # type: ignore[arg-type]


@pytest.mark.parametrize("wh", [(40, 23), (23, 40), (31, 31), (7, 5), (301, 120)], ids=str)
def test_resize_and_crop_match_torchvision_lanczos(wh: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(wh))
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    ref = T.Compose([T.Resize(16, interpolation=T.InterpolationMode.LANCZOS), T.CenterCrop(16)])(img)
    ours = resize_center_crop(img, 16)
    assert ours.size == (16, 16)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_centre_crop_keeps_the_middle() -> None:
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, :10, 0] = 255  # red left third
    arr[:, 10:20, 1] = 255  # green middle third
    arr[:, 20:, 2] = 255  # blue right third
    x = make_transform("none", 10)(Image.fromarray(arr))
    torch.testing.assert_close(x.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]))


def test_transform_describes_itself() -> None:
    d = make_transform("caffe", 32).to_dict()
    assert d["name"] == "caffe" and d["channel_order"] == "BGR" and d["size"] == 32
    assert d["interpolation"] == "lanczos" and d["mean"] == [103.939, 116.779, 123.68]
