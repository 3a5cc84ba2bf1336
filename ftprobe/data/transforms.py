"""Image preprocessing: resize + centre crop (as the study), and the normalisation presets.

A preset maps an RGB image in ``[0, 1]`` to what a network expects::

    out = (x_rgb01 * scale)[channel_order] - mean) / std        # mean, std in the OUTPUT channel order

========  =======  =====  =================================  =====================
name      order    scale  mean                               std
========  =======  =====  =================================  =====================
imagenet  RGB      1      (0.485, 0.456, 0.406)              (0.229, 0.224, 0.225)
caffe     BGR      255    (103.939, 116.779, 123.68) (B,G,R)  (1, 1, 1)
none      RGB      1      (0, 0, 0)                          (1, 1, 1)
========  =======  =====  =================================  =====================

``caffe`` is Keras' / Lucid's "caffe" mode that the study used (InceptionV1 with Lucid weights). The
feature-visualisation code reuses :func:`normalize` / :func:`denormalize` alone, on tensors it optimises, so both are
plain differentiable tensor ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ftprobe.core.errors import DataError

__all__ = [
    "PRESETS",
    "ImageTransform",
    "Preset",
    "denormalize",
    "get_preset",
    "make_transform",
    "normalize",
    "resize_center_crop",
]


@dataclass(frozen=True)
class Preset:
    """A normalisation preset; ``mean`` and ``std`` are given in the output channel order (see module docstring).

    Attributes:
        name: preset name, recorded in results.
        mean: 3 values subtracted after scaling and channel reordering.
        std: 3 divisors applied after the mean.
        channel_order: ``"RGB"`` or ``"BGR"``: the channel order of the network input.
        scale: multiplier applied to the ``[0, 1]`` RGB input first (255 for caffe).
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (name, mean, std, channel order, scale)."""
        return {
            "name": self.name,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
            "scale": self.scale,
        }


PRESETS: dict[str, Preset] = {
    "imagenet": Preset("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "RGB", 1.0),
    "caffe": Preset("caffe", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "BGR", 255.0),
    "none": Preset("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB", 1.0),
}


def get_preset(preprocess: str | Preset) -> Preset:
    """Return the :class:`Preset` named ``preprocess`` (or ``preprocess`` itself if it is one).

    Raises:
        DataError: unknown name; the message lists the known presets.
    """
    if isinstance(preprocess, Preset):
        return preprocess
    key = str(preprocess).lower()
    if key not in PRESETS:
        raise DataError(
            f"Unknown preprocessing {preprocess!r}. Use one of: {', '.join(PRESETS)} "
            "(or pass an ftprobe.data.Preset for custom mean/std)."
        )
    return PRESETS[key]


def _stats(x: Tensor, preset: Preset) -> tuple[Tensor, Tensor]:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected images (..., 3, H, W), got shape {tuple(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mean = torch.tensor(preset.mean, dtype=dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(preset.std, dtype=dtype, device=x.device).view(3, 1, 1)
    return mean, std


def normalize(x_rgb01: Tensor, preprocess: str | Preset = "imagenet") -> Tensor:
    """Map RGB images in ``[0, 1]`` to network input (differentiable).

    Args:
        x_rgb01: ``(N, 3, H, W)`` or ``(3, H, W)`` RGB in ``[0, 1]``.
        preprocess: preset name or :class:`Preset`.

    Returns:
        Tensor of the same shape, in the preset's channel order and scale.
    """
    p = get_preset(preprocess)
    mean, std = _stats(x_rgb01, p)
    x = x_rgb01 * p.scale if p.scale != 1.0 else x_rgb01
    if p.channel_order == "BGR":
        x = x.flip(-3)
    return (x - mean) / std


def denormalize(x: Tensor, preprocess: str | Preset = "imagenet") -> Tensor:
    """Inverse of :func:`normalize`: network input ``(N, 3, H, W)`` or ``(3, H, W)`` back to RGB ``[0, 1]``.

    No clamping is applied: values outside ``[0, 1]`` mean the input was outside the preset's image range.
    """
    p = get_preset(preprocess)
    mean, std = _stats(x, p)
    y = x * std + mean
    if p.channel_order == "BGR":
        y = y.flip(-3)
    return y / p.scale if p.scale != 1.0 else y


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (PIL LANCZOS), then centre-crop ``size × size``.

    Same sizes and crop box as ``torchvision.transforms.Resize(size, LANCZOS)`` + ``CenterCrop(size)``: the longer side
    becomes ``int(size * long / short)`` and the crop offset is ``round((side - size) / 2)``.
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


class ImageTransform:
    """Picklable callable: RGB ``PIL.Image`` → normalised float32 tensor ``(3, S, S)`` (``S = size``).

    With ``size=None`` the image keeps its own size (``(3, H, W)``).
    """

    def __init__(self, preprocess: str | Preset = "imagenet", size: int | None = 224) -> None:
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise DataError(f"size must be a positive integer (pixels of the square crop), got {size!r}.")
        self.preset = get_preset(preprocess)
        self.size = size

    def __call__(self, img: Image.Image) -> Tensor:
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.size is not None:
            img = resize_center_crop(img, self.size)
        arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)
        return normalize(x, self.preset).contiguous()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: preset fields plus size, interpolation, resize and crop rules."""
        d = self.preset.to_dict()
        d.update(size=self.size, interpolation="lanczos", resize="shorter side", crop="center")
        return d

    def __repr__(self) -> str:
        return f"ImageTransform(preprocess={self.preset.name!r}, size={self.size})"


def make_transform(preprocess: str | Preset = "imagenet", size: int | None = 224) -> ImageTransform:
    """Return a callable ``PIL.Image -> Tensor (3, size, size)`` (resize, centre crop, to ``[0, 1]``, normalise)."""
    return ImageTransform(preprocess, size)
