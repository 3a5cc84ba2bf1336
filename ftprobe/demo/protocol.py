"""Pieces of the study's protocol on real image files, used by ``examples/paper_study.py``: labelled image tables
(folder or CSV) and their seeded splits, loaders with the study's preprocessing (shorter side resized, centre crop,
``imagenet`` or Keras/Lucid ``caffe`` normalisation), the study's layer groups on any model that has the Lucid
InceptionV1 names (directly or through ftprobe's alias table), checkpoints, and merging two comparisons.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ftprobe.core.aliases import ALIASES, arch_key
from ftprobe.core.errors import DataError
from ftprobe.core.results import Result
from ftprobe.data import load_rgb, make_transform, read_csv, scan_folder

__all__ = ["LUCID", "ImageTable", "merge_results", "read_table", "save_checkpoint", "study_layers"]

#: The study's 12 layers (Lucid InceptionV1 names), shallow to deep; the lower part ends at ``mixed3b``.
LUCID: tuple[str, ...] = ("conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c",
                          "mixed4d", "mixed4e", "mixed5a", "mixed5b")


@dataclass(frozen=True)
class ImageTable:
    """Labelled image files: ``labels`` ``(N,)`` class indices or ``(N, K)`` multi-hot."""

    paths: tuple[str, ...]
    labels: Tensor
    classes: tuple[str, ...]

    @property
    def multilabel(self) -> bool:
        return self.labels.dim() == 2

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: Sequence[int]) -> ImageTable:
        return ImageTable(tuple(self.paths[i] for i in idx), self.labels[list(idx)], self.classes)

    def split(self, fractions: Sequence[float], seed: int) -> list[ImageTable]:
        """Seeded random parts of the given fractions (the last part takes the remainder)."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).tolist()
        parts, start = [], 0
        for f in fractions[:-1]:
            n = max(1, round(f * len(self)))
            parts.append(self.subset(sorted(order[start: start + n])))
            start += n
        parts.append(self.subset(sorted(order[start:])))
        return parts

    def write_csv(self, path: Path) -> Path:
        """A CSV ``ftprobe compare --data`` reads: ``path,label`` (multi-class) or one 0/1 column per class."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            if self.multilabel:
                w.writerow(["path", *self.classes])
                w.writerows([p, *row] for p, row in zip(self.paths, self.labels.tolist()))
            else:
                w.writerow(["path", "label"])
                w.writerows([p, self.classes[i]] for p, i in zip(self.paths, self.labels.tolist()))
        return path

    def loader(self, preprocess: str, size: int, batch_size: int, *, shuffle: bool, seed: int = 0,
               workers: int = 0) -> DataLoader:  # type: ignore[type-arg]
        """Batches ``(images (B, 3, size, size), labels)``; shuffled from a seeded generator when training."""
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(_Files(self, make_transform(preprocess, size)), batch_size=batch_size, shuffle=shuffle,
                          generator=gen, num_workers=workers)


class _Files(Dataset):  # type: ignore[type-arg]
    def __init__(self, table: ImageTable, transform: Any) -> None:
        self.table, self.transform = table, transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(load_rgb(self.table.paths[i])), self.table.labels[i]


def read_table(path: str | os.PathLike[str]) -> ImageTable:
    """A folder with one sub-folder per class, or a CSV (``path,label``, ``a;b`` cells, or 0/1 class columns).

    Raises:
        DataError: missing path, no labels.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        scan = scan_folder(os.path.abspath(p))
        if scan.labels is None:
            raise DataError(f"{p!r} has no class sub-folders; the study needs labels (DIR/<class>/<image>)")
        return ImageTable(tuple(scan.paths), torch.tensor(scan.labels), tuple(scan.classes))
    if not os.path.isfile(p):
        raise DataError(f"{p!r} does not exist; pass a folder of class sub-folders or a CSV of path,label")
    table = read_csv(os.path.abspath(p))
    if table.labels is None:
        raise DataError(f"{p!r} has no label column; add `label` or one 0/1 column per class")
    return ImageTable(tuple(table.paths), table.labels, tuple(table.classes))


def study_layers(model: nn.Module) -> dict[str, str]:
    """Lucid name → module path for the study's layers this model has (alias table, or the names themselves)."""
    aliases = ALIASES.get(arch_key(model), {})
    names = {n for n, _ in model.named_modules()}
    out = {}
    for lucid in LUCID:
        if lucid in names:
            out[lucid] = lucid
        elif aliases.get(lucid) in names:
            out[lucid] = aliases[lucid]
    return out


def save_checkpoint(model: nn.Module, path: Path, arch: str | None, **arch_kwargs: Any) -> Path:
    """``ftprobe.save`` (the architecture recorded, so ``ftprobe compare`` needs no ``--arch``) for torchvision/timm
    architectures; a plain state dict with the builder arguments otherwise (the demo's CNN)."""
    if arch is not None:
        from ftprobe import save

        return save(model, path, arch=arch, **arch_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "builder": {"class": type(model).__qualname__, **arch_kwargs}}, path)
    return path


def merge_results(first: Result, second: Result, *, note: str) -> Result:
    """One result holding the values of two comparisons of the same models, pairs and layers on different data.

    The second one's ``data`` (and so its image paths, for the report's top-image grids) is kept; the first one's
    is recorded under ``run["other_data"]`` with ``note`` saying which metrics used it.
    """
    if [m["label"] for m in first.models] != [m["label"] for m in second.models] or first.pairs != second.pairs:
        raise ValueError("merge_results needs two comparisons of the same models and pairs")
    run = {**first.run, **second.run, "other_data": {"note": note, "data": first.data}}
    return dataclasses.replace(
        second, metrics={**first.metrics, **second.metrics}, values=[*first.values, *second.values],
        skipped_metrics=[*first.skipped_metrics, *second.skipped_metrics],
        warnings=[*first.warnings, *second.warnings], run=run,
    )
