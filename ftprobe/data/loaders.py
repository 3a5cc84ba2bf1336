"""Torch-side plumbing of the data layer: the :class:`Batch` record, datasets that mark unreadable samples instead of
raising, the collate function that drops them (and reports them, also from DataLoader worker processes), re-batching
to a constant batch size, and parsing of user-supplied batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ftprobe.core.errors import DataError
from ftprobe.data.images import UnreadableImage, load_rgb

__all__ = ["Batch", "FileDataset", "IndexedDataset", "Skipped", "collate_samples", "parse_batch", "rebatch"]


@dataclass(frozen=True)
class Batch:
    """One batch of samples.

    Attributes:
        x: ``(N, 3, S, S)`` float32 network input (already normalised).
        labels: ``(N,)`` int64 class indices, ``(N, K)`` int64 multi-hot, or ``None``.
        index: ``(N,)`` int64 global sample indices (positions in the full, un-limited source).
    """

    x: Tensor
    labels: Tensor | None
    index: Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Copy of the batch with ``x`` and ``labels`` on ``device`` (``index`` stays where it is)."""
        labels = None if self.labels is None else self.labels.to(device, non_blocking=non_blocking)
        return Batch(self.x.to(device, non_blocking=non_blocking), labels, self.index)


class Skipped(NamedTuple):
    """Marker a dataset returns instead of a sample it could not read."""

    path: str
    reason: str
    index: int


Sample = tuple[Tensor, Tensor | None, int]


class FileDataset(Dataset):  # type: ignore[type-arg]
    """Image files → ``(x (3, S, S), label, index)`` or :class:`Skipped`; indexed by global position."""

    def __init__(self, paths: Sequence[str], labels: Tensor | None, transform: Callable[[Image.Image], Tensor]) -> None:
        self.paths, self.labels, self.transform = list(paths), labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Sample | Skipped:
        try:
            img = load_rgb(self.paths[i])
        except UnreadableImage as e:
            return Skipped(e.path, e.reason, i)
        return self.transform(img), None if self.labels is None else self.labels[i], i


def _as_label(label: Any) -> Tensor | None:
    if label is None:
        return None
    t = torch.as_tensor(label)
    return t.to(torch.int64) if t.dtype != torch.int64 else t


def split_item(item: Any) -> tuple[Any, Any]:
    """Split a dataset item into ``(image, label or None)``.

    Accepted: ``(image, label)``, ``(image,)``, ``{"image": …, "label": …}`` or a bare image.
    """
    if isinstance(item, dict):
        return _pick(item, ("image", "images", "x"), "image"), _pick(item, ("label", "labels", "y"), None)
    if isinstance(item, (tuple, list)):
        if not item:
            raise DataError("the dataset returned an empty tuple; return (image, label) or an image.")
        return item[0], item[1] if len(item) > 1 else None
    return item, None


class IndexedDataset(Dataset):  # type: ignore[type-arg]
    """Wraps a user's map-style dataset: PIL images go through ``transform``, tensors are used as supplied, a
    ``None`` item is skipped (reported with its path if ``path_of`` knows it)."""

    def __init__(
        self, dataset: Any, transform: Callable[[Image.Image], Tensor], path_of: Callable[[int], str | None]
    ) -> None:
        self.dataset, self.transform, self.path_of = dataset, transform, path_of

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample | Skipped:
        item = self.dataset[i]
        if item is None:
            return Skipped(self.path_of(i) or f"<sample {i}>", "the dataset returned None", i)
        img, label = split_item(item)
        if isinstance(img, Image.Image):
            img = self.transform(img.convert("RGB"))
        elif not isinstance(img, Tensor):
            raise DataError(
                f"the dataset returned a {type(img).__name__} as image for sample {i}; return a tensor (3, H, W) or a "
                "PIL image."
            )
        return img, _as_label(label), i


def collate_samples(items: list[Sample | Skipped]) -> dict[str, Any]:
    """Stack readable samples, list the skipped ones: ``{"x", "labels", "index", "skipped": [(path, reason)]}``.

    Runs in DataLoader workers too, which is how a skip made in a worker reaches the main process.
    """
    good = [it for it in items if not isinstance(it, Skipped)]
    skipped = [(it.path, it.reason) for it in items if isinstance(it, Skipped)]
    index = torch.tensor([it[2] for it in good], dtype=torch.int64)
    if not good:
        return {"x": None, "labels": None, "index": index, "skipped": skipped}
    labels = [it[1] for it in good]
    if all(lb is None for lb in labels):
        stacked = None
    elif any(lb is None for lb in labels):
        raise DataError("some samples have a label and others none; give every sample a label, or none.")
    else:
        stacked = torch.stack(labels)  # type: ignore[arg-type]
    return {"x": torch.stack([it[0] for it in good]), "labels": stacked, "index": index, "skipped": skipped}


def rebatch(parts: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Re-cut batches so each has ``batch_size`` samples except the last (short batches appear when files are
    skipped). A full batch with nothing pending passes through untouched."""
    pending: list[Batch] = []
    count = 0
    for b in parts:
        if not pending and len(b) == batch_size:
            yield b
            continue
        pending.append(b)
        count += len(b)
        while count >= batch_size:
            merged = _cat(pending)
            yield _slice(merged, 0, batch_size)
            rest = _slice(merged, batch_size, count)
            pending, count = ([rest] if len(rest) else []), count - batch_size
    if count:
        yield _cat(pending)


def _cat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    labels = None if parts[0].labels is None else torch.cat([p.labels for p in parts])  # type: ignore[misc]
    x = torch.cat([p.x for p in parts])
    if parts[0].x.is_pinned():
        x = x.pin_memory()
    return Batch(x, labels, torch.cat([p.index for p in parts]))


def _slice(b: Batch, start: int, stop: int) -> Batch:
    labels = None if b.labels is None else b.labels[start:stop]
    return Batch(b.x[start:stop], labels, b.index[start:stop])


def _pick(d: dict[str, Any], keys: tuple[str, ...], required: str | None) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    if required:
        raise DataError(f"a dict batch needs an {required!r} key (one of {', '.join(keys)}); got keys {sorted(d)}.")
    return None


def parse_batch(raw: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A user batch → ``(x, labels or None, index or None)``, with shape checks that say how to fix a mistake.

    Accepted: ``(x, y)``, ``(x, y, index)``, ``(x,)``, a bare tensor ``x``, or a dict with keys ``image``/``images``/
    ``x``, ``label``/``labels``/``y`` and ``index``/``indices``.
    """
    if isinstance(raw, Tensor):
        x, y, idx = raw, None, None
    elif isinstance(raw, dict):
        x = _pick(raw, ("image", "images", "x"), "image")
        y = _pick(raw, ("label", "labels", "y"), None)
        idx = _pick(raw, ("index", "indices"), None)
    elif isinstance(raw, (tuple, list)) and 1 <= len(raw) <= 3:
        x, y, idx = (list(raw) + [None, None])[:3]
    else:
        raise DataError(
            f"cannot read a batch of type {type(raw).__name__}; yield (images, labels), (images, labels, index) or a "
            "dict with 'image', 'label', 'index'."
        )
    if not isinstance(x, Tensor) or x.dim() < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else ""
        raise DataError(f"batch images must be a tensor (N, C, H, W); got {type(x).__name__} {shape}.")
    if not x.is_floating_point():
        raise DataError(
            f"batch images are {x.dtype}; convert them to float and normalise them (ftprobe.data.make_transform does "
            "both) before yielding them."
        )
    n = x.shape[0]
    labels = _as_label(y)
    if labels is not None and (labels.dim() == 0 or labels.shape[0] != n):
        raise DataError(f"batch has {n} images but labels of shape {tuple(labels.shape)}; give one label per image.")
    index = None if idx is None else torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
    if index is not None and index.shape[0] != n:
        raise DataError(f"batch has {n} images but {index.shape[0]} indices; give one index per image.")
    return x, labels, index
