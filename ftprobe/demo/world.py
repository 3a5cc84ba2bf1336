"""The demo's generated "art world": photo-like scenes of objects (the source domain) and the same kind of scenes
painted in five styles (the target domain), shipped as code, deterministic, and exportable as PNG folders.

Every image is drawn from a generator seeded with ``(seed, domain, index)``, then all images of a call are rendered
together with batched torch ops, so ``world.photos([5, 9])`` equals rows 5 and 9 of ``world.photos(range(10))``.
Pixel values are quantised to 8 bits, so an exported PNG decodes to exactly the tensor that was rendered.

Domains and their labels (balanced over any run of consecutive indices, as shown):

- ``photos``: one object per scene; label = object, ``index % 6`` (:data:`OBJECTS`).
- ``paintings``: one or two objects per scene, painted in a style; style = ``index % 5`` (:data:`STYLES`), first
  object = ``(index // 5) % 6``, a second object in about half of the scenes. Labels: the style (the medium
  "RASTA-like" task) and the objects, multi-hot (the small "Paintings/IconArt-like" task).

Example:
    >>> w = World(size=32)
    >>> x, y = w.photos(range(12))
    >>> tuple(x.shape), y.tolist()[:7]
    ((12, 3, 32, 32), [0, 1, 2, 3, 4, 5, 0])
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ftprobe.core.errors import FtprobeError
from ftprobe.demo._render import OBJECTS, STYLES, paint, scene

__all__ = ["OBJECTS", "STYLES", "WORLD_VERSION", "Paintings", "World", "export_world"]

#: Bumped whenever rendering changes, so cached models trained on an older world are not reused.
WORLD_VERSION = 1
_DOMAINS = {"photos": 1, "paintings": 2}
_SCENE_P, _STYLE_P = 40, 16
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


@dataclass(frozen=True)
class Paintings:
    """A batch of paintings.

    Attributes:
        images: ``(N, 3, S, S)`` RGB in ``[0, 1]`` (multiples of 1/255).
        style: ``(N,)`` int64 index into :data:`STYLES`.
        objects: ``(N, 6)`` int64 multi-hot over :data:`OBJECTS`.
    """

    images: Tensor
    style: Tensor
    objects: Tensor


def _seed(seed: int, domain: int, index: int) -> int:
    h = (seed * _MIX[0] + domain * _MIX[1] + index * _MIX[2]) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 31
    return (h * _MIX[1] & 0xFFFFFFFFFFFFFFFF) >> 1


class World:
    """The generated art world.

    Args:
        size: image side S in pixels (32–48 keeps CPU training fast).
        seed: world seed; a different seed gives a different (equally balanced) world.
    """

    def __init__(self, size: int = 32, seed: int = 0) -> None:
        if not 16 <= int(size) <= 128:
            raise FtprobeError(f"World size must be between 16 and 128 pixels, got {size}; use e.g. size=32")
        self.size, self.seed = int(size), int(seed)

    def __repr__(self) -> str:
        return f"World(size={self.size}, seed={self.seed})"

    def _draws(self, domain: str, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-image random numbers: scene uniforms, style uniforms, cell jitter, normal noise (two fields)."""
        s = self.size
        g_cells = -(-s // 3)
        n_u = _SCENE_P + _STYLE_P + 2 * g_cells * g_cells + 1
        u = torch.empty(len(indices), n_u)
        z = torch.empty(len(indices), 2, 3, s, s)
        gen = torch.Generator()
        for row, i in enumerate(indices):
            gen.manual_seed(_seed(self.seed, _DOMAINS[domain], int(i)))
            u[row] = torch.rand(n_u, generator=gen)
            z[row] = torch.randn(2, 3, s, s, generator=gen)
        jitter = u[:, _SCENE_P + _STYLE_P: -1].reshape(-1, g_cells, g_cells, 2)
        return u[:, :_SCENE_P + _STYLE_P], jitter, u[:, -1], z

    def photos(self, indices: Iterable[int]) -> tuple[Tensor, Tensor]:
        """Photo-like scenes with one object each.

        Returns:
            ``(images (N, 3, S, S) in [0, 1], labels (N,) int64)``, labels index :data:`OBJECTS`.
        """
        idx = [int(i) for i in indices]
        u, _, _, z = self._draws("photos", idx)
        labels = torch.tensor([i % len(OBJECTS) for i in idx], dtype=torch.int64)
        objects = torch.stack([labels, torch.full_like(labels, -1)], dim=1)
        return _quantise(scene(u[:, :_SCENE_P], z[:, 0], objects, self.size)), labels

    def paintings(self, indices: Iterable[int]) -> Paintings:
        """Scenes of one or two objects painted in one of :data:`STYLES`."""
        idx = [int(i) for i in indices]
        u, jitter, extra, z = self._draws("paintings", idx)
        n_obj, n_sty = len(OBJECTS), len(STYLES)
        style = torch.tensor([i % n_sty for i in idx], dtype=torch.int64)
        first = torch.tensor([(i // n_sty) % n_obj for i in idx], dtype=torch.int64)
        # second object: absent in about half of the scenes, else any other class
        pick = (extra * 2 * (n_obj - 1)).floor().long()
        second = torch.where(pick < n_obj - 1, (first + 1 + pick) % n_obj, torch.full_like(first, -1))
        objects = torch.stack([first, second], dim=1)
        photo = scene(u[:, :_SCENE_P], z[:, 0], objects, self.size)
        art = paint(photo, style, u[:, _SCENE_P:], jitter, z[:, 1])
        multi_hot = torch.zeros(len(idx), n_obj, dtype=torch.int64)
        multi_hot[torch.arange(len(idx)), first] = 1
        has_second = second >= 0
        multi_hot[torch.arange(len(idx))[has_second], second[has_second]] = 1
        return Paintings(_quantise(art), style, multi_hot)


def _quantise(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def _save_png(img: Tensor, path: Path) -> None:
    from PIL import Image

    arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr).save(path, optimize=False, compress_level=1)


def _chunks(indices: Sequence[int], size: int = 512) -> Iterable[Sequence[int]]:
    for start in range(0, len(indices), size):
        yield indices[start: start + size]


def export_world(
    world: World,
    root: str | Path,
    *,
    photos: Sequence[int] = range(600),
    styles: dict[str, Sequence[int]] | None = None,
    objects: Sequence[int] = range(1_000_000, 1_000_300),
) -> dict[str, Path]:
    """Write the world as PNG folders that ``ftprobe compare --data`` (and any ImageFolder reader) accepts.

    Layout::

        root/photos/<object>/p<index>.png                   source domain, one class folder per object
        root/styles/<split>/<style>/a<index>.png            target domain, style labels (one folder per split)
        root/objects/images/o<index>.png + objects.csv      target domain, multi-label objects (one 0/1 column
                                                            per object class, the small task)

    Args:
        world: the world to draw from.
        root: output folder (created).
        photos: photo indices (empty: none).
        styles: split name → painting indices, default ``{"train": range(1000), "test": range(500_000, 500_500)}``.
        objects: painting indices of the multi-label object task (empty: none).

    Returns:
        ``{"photos": path, "styles/<split>": path, "objects": csv path}`` for what was written.
    """
    root = Path(root)
    styles = {"train": range(1000), "test": range(500_000, 500_500)} if styles is None else styles
    written: dict[str, Path] = {}
    if len(photos):
        for chunk in _chunks(list(photos)):
            x, y = world.photos(chunk)
            for i, img, lab in zip(chunk, x, y.tolist()):
                d = root / "photos" / OBJECTS[lab]
                d.mkdir(parents=True, exist_ok=True)
                _save_png(img, d / f"p{i:07d}.png")
        written["photos"] = root / "photos"
    for split, idx in styles.items():
        for chunk in _chunks(list(idx)):
            batch = world.paintings(chunk)
            for i, img, lab in zip(chunk, batch.images, batch.style.tolist()):
                d = root / "styles" / split / STYLES[lab]
                d.mkdir(parents=True, exist_ok=True)
                _save_png(img, d / f"a{i:07d}.png")
        written[f"styles/{split}"] = root / "styles" / split
    if len(objects):
        d = root / "objects" / "images"
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for chunk in _chunks(list(objects)):
            batch = world.paintings(chunk)
            for i, img, hot in zip(chunk, batch.images, batch.objects.tolist()):
                _save_png(img, d / f"o{i:07d}.png")
                rows.append([f"images/o{i:07d}.png", *hot])
        csv_path = root / "objects" / "objects.csv"
        with csv_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", *OBJECTS])
            writer.writerows(rows)
        written["objects"] = csv_path
    return written
