"""Tiny seeded models and image folders for fast tests (CPU, well under a second each)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["ReuseNet", "TinyNet", "make_image_folder", "perturbed_copy"]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyNet(nn.Module):
    """A small CNN whose blocks carry the study's (Lucid InceptionV1) layer names."""

    def __init__(self, num_classes: int = 5, width: int = 8, seed: int | None = 0) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        w = width
        self.conv2d0 = _block(3, w, stride=2)
        self.conv2d1 = _block(w, w)
        self.mixed3a = _block(w, 2 * w, stride=2)
        self.mixed4a = _block(2 * w, 2 * w)
        self.mixed4d = _block(2 * w, 4 * w, stride=2)
        self.mixed5b = _block(4 * w, 4 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for name in ("conv2d0", "conv2d1", "mixed3a", "mixed4a", "mixed4d", "mixed5b"):
            x = getattr(self, name)(x)
        return self.fc(self.pool(x).flatten(1))


class _TupleBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv(x)
        return y, y.mean()


class _DictBlock(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"meta": "not a tensor", "features": x * 2}  # type: ignore[dict-item]


class ReuseNet(nn.Module):
    """One ``act`` module called twice per forward, a tuple-returning block and a dict-returning block."""

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pair = _TupleBlock(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.named = _DictBlock()
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv1(x))
        x, _ = self.pair(x)
        x = self.act(self.conv2(x))
        x = self.named(x)["features"]
        return self.head(x.mean(dim=(2, 3)))


def perturbed_copy(model: nn.Module, noise: float = 0.1, seed: int = 1) -> nn.Module:
    """A deep copy with Gaussian noise of ``noise`` × each parameter tensor's std added (a stand-in fine-tune)."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            std = p.std() if p.numel() > 1 else p.abs()
            p.add_(torch.randn(p.shape, generator=g) * noise * std)
    return out


def make_image_folder(root: str | Path, classes: int = 3, per_class: int = 6, size: int = 32, seed: int = 0) -> Path:
    """Write a small ImageFolder (``root/class_i/img_j.png``) of seeded random colour images; returns ``root``."""
    from PIL import Image

    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            base = torch.rand(3, generator=g) * 255
            arr = (base.view(1, 1, 3) * 0.5 + torch.rand(size, size, 3, generator=g) * 127).clamp(0, 255)
            Image.fromarray(arr.to(torch.uint8).numpy()).save(d / f"img_{j:03d}.png")
    return root
