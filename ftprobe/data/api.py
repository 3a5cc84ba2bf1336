"""The one entry point of the data layer: :func:`open_data`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ftprobe.core.errors import DataError
from ftprobe.data.csvtable import read_csv
from ftprobe.data.images import scan_folder
from ftprobe.data.sources import DatasetSource, DataSource, FileSource
from ftprobe.data.streams import LoaderSource
from ftprobe.data.transforms import Preset, make_transform

__all__ = ["open_data"]

DataInput = str | os.PathLike[str] | Dataset | DataLoader | Iterable[Any] | DataSource  # type: ignore[type-arg]


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DataError(f"{name} must be an integer ≥ {minimum}{' or None' if allow_none else ''}, got {value!r}.")


def open_data(
    source: DataInput,
    *,
    preprocess: str | Preset = "imagenet",
    size: int = 224,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataSource:
    """Open a data source for one streaming pass (or several) over its batches.

    Args:
        source: a folder (class sub-folders → labels; or a flat folder of images → no labels), a ``.csv`` / ``.tsv``
            image list, a map-style torch ``Dataset`` returning ``(image, label)``, an ``IterableDataset``, a
            ``DataLoader``, any iterable of ``(x, y)`` / ``(x, y, index)`` / dict batches, or a ``DataSource``
            (returned unchanged).
        preprocess: ``"imagenet"``, ``"caffe"``, ``"none"`` or a :class:`Preset`; applies to images ftprobe decodes.
        size: shorter side resized to ``size`` (LANCZOS), then a ``size × size`` centre crop.
        limit: keep a seeded random subset of ``limit`` samples, in index order (streams keep the first ``limit``).
        seed: seed of that subset.
        batch_size: samples per batch (files and map-style datasets; a user's DataLoader keeps its own).
        workers: DataLoader worker processes for decoding.
        pin_memory: pin batches (only when CUDA is available).

    Raises:
        DataError: missing path, unknown preset, bad option, empty folder, bad CSV rows, unsupported source.
    """
    if isinstance(source, DataSource):
        return source
    transform = make_transform(preprocess, size)
    _check_int("batch_size", batch_size, 1)
    _check_int("workers", workers, 0)
    _check_int("limit", limit, 1, allow_none=True)
    _check_int("seed", seed, 0)
    kw: dict[str, Any] = {"transform": transform, "limit": limit, "seed": seed, "batch_size": batch_size}
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), workers=workers, pin_memory=pin_memory, **kw)
    if isinstance(source, DataLoader):
        return LoaderSource(source, "dataloader", **kw)
    if isinstance(source, IterableDataset):
        loader = DataLoader(source, batch_size=batch_size, num_workers=workers, pin_memory=_pin(pin_memory))
        return LoaderSource(loader, "iterable_dataset", **kw)
    if isinstance(source, Dataset):
        return DatasetSource(source, workers=workers, pin_memory=pin_memory, **kw)
    if isinstance(source, Tensor) or not isinstance(source, Iterable) or isinstance(source, (bytes, dict)):
        raise DataError(
            f"Cannot read data from a {type(source).__name__}. Pass a folder, a .csv file, a torch Dataset, a "
            "DataLoader, or an iterable of (images, labels) batches (a single tensor: wrap it as [(x, labels)])."
        )
    return LoaderSource(source, "iterable", **kw)


def _pin(pin_memory: bool) -> bool:
    return bool(pin_memory) and torch.cuda.is_available()


def _open_path(path: str, **kw: Any) -> DataSource:
    if not os.path.exists(path):
        raise DataError(
            f"Data path {path!r} does not exist. Pass a folder of images (optionally one sub-folder per class) or a "
            ".csv file listing image paths."
        )
    root = os.path.abspath(path)
    if os.path.isdir(path):
        scan = scan_folder(root)
        labels = None if scan.labels is None else torch.tensor(scan.labels, dtype=torch.int64)
        return FileSource(scan.kind, root, scan.paths, labels, scan.classes, scan.skipped, **kw)
    if os.path.splitext(path)[1].lower() not in (".csv", ".tsv"):
        raise DataError(
            f"{path!r} is a file, but not a .csv image list. Pass its folder, or a .csv with a `path` column "
            "(and a `label` column or one 0/1 column per class)."
        )
    table = read_csv(root)
    src = FileSource("csv", root, table.paths, table.labels, table.classes, [], **kw)
    src.describe_also(ignored_columns=table.ignored_columns)
    chosen = [table.paths[i] for i in src.selected]
    if not any(os.path.isfile(p) for p in chosen):
        raise DataError(
            f"None of the {len(chosen)} image paths listed in {path!r} exists (first: {chosen[0]!r}). Relative paths "
            f"are read from the CSV's folder {os.path.dirname(root)!r}; fix the paths or move the CSV."
        )
    return src
