"""Random transforms applied to the image at every optimisation step (Lucid's ``standard_transforms``).

Lucid's list, in order: ``pad(12, constant 0.5)``, ``jitter(8)``, ``random_scale([0.90, 0.92, …, 1.10])``,
``random_rotate(-10…10 degrees, with 0 five extra times)``, ``jitter(4)``. They act on RGB images in ``[0, 1]``,
before the model's preprocessing. As in Lucid, one random draw per step is shared by the whole batch, the image
size changes (jitter crops ``d`` pixels, scaling resizes), and the choices are made from the same discrete lists.
One difference: the rotation interpolates bilinearly (Lucid's ``tf.contrib.image.rotate`` used nearest neighbours),
so the gradient reaches every pixel; the corners a rotation uncovers are 0, as in Lucid.

Every transform is a callable ``(images (N, 3, H, W), generator) -> images``; the random choices come from the
``torch.Generator`` passed in, so a seeded run repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "STANDARD_ANGLES",
    "STANDARD_SCALES",
    "Compose",
    "Jitter",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "Transform",
    "standard_transforms",
]

Transform = Callable[[Tensor, torch.Generator], Tensor]

#: Lucid's ``[1 + (i - 5) / 50. for i in range(11)]``: 0.90, 0.92, … 1.10.
STANDARD_SCALES: tuple[float, ...] = tuple(1 + (i - 5) / 50.0 for i in range(11))
#: Lucid's ``list(range(-10, 11)) + 5 * [0]`` (degrees; no rotation is drawn more often).
STANDARD_ANGLES: tuple[int, ...] = tuple(range(-10, 11)) + (0,) * 5


def _choice(options: Sequence, g: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=g))]


@dataclass(frozen=True)
class Pad:
    """Pad every side by ``width`` pixels of the constant ``value`` (Lucid: 12 px of grey 0.5)."""

    width: int = 12
    value: float = 0.5

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        return F.pad(x, (self.width,) * 4, mode="constant", value=self.value)


@dataclass(frozen=True)
class Jitter:
    """Random crop that removes ``d`` pixels in height and in width (offsets uniform in ``0 … d``)."""

    d: int

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        h, w = x.shape[-2:]
        if self.d >= min(h, w):
            raise ValueError(f"jitter({self.d}) needs images larger than {self.d} px, got {h}×{w}")
        dy = int(torch.randint(self.d + 1, (1,), generator=g))
        dx = int(torch.randint(self.d + 1, (1,), generator=g))
        return x[..., dy : dy + h - self.d, dx : dx + w - self.d]


@dataclass(frozen=True)
class RandomScale:
    """Resize (bilinear) by a factor drawn from ``scales``; the new size is ``int(factor × size)`` as in Lucid."""

    scales: tuple[float, ...] = STANDARD_SCALES

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        s = float(_choice(self.scales, g))
        h, w = x.shape[-2:]
        size = (max(1, int(s * h + 1e-6)), max(1, int(s * w + 1e-6)))
        if size == (h, w):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class RandomRotate:
    """Rotate about the centre by an angle (degrees) drawn from ``angles``; bilinear, uncovered corners are 0."""

    angles: tuple[float, ...] = STANDARD_ANGLES

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        deg = float(_choice(self.angles, g))
        if deg == 0.0:
            return x
        n, _, h, w = x.shape
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        # Rotation in pixel space, written in affine_grid's normalised coordinates (which scale x by W and y by H).
        theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(n, 2, 3), [n, x.shape[1], h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Compose:
    """Apply transforms in order, all drawing from one generator.

    Example:
        >>> t = standard_transforms()
        >>> tuple(t(torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0)).shape)[:2]
        (2, 3)
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        for t in self.transforms:
            x = t(x, g)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def standard_transforms() -> Compose:
    """Lucid's ``standard_transforms``: pad 12, jitter 8, random scale 0.9–1.1, random rotation ±10°, jitter 4."""
    return Compose([Pad(12, 0.5), Jitter(8), RandomScale(), RandomRotate(), Jitter(4)])
