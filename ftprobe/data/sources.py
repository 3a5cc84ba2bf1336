"""Data sources: :func:`open_data` turns a folder, a CSV file, a torch Dataset, a DataLoader or an iterable of batches
into a :class:`DataSource` that yields :class:`~ftprobe.data.loaders.Batch` records with global sample indices.

Files are decoded by ftprobe (``preprocess`` and ``size`` apply); tensors from a user's Dataset, DataLoader or
iterable are used as supplied (only PIL images returned by a Dataset go through ``preprocess``/``size``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ftprobe.core.errors import DataError
from ftprobe.data.loaders import Batch, FileDataset, IndexedDataset, collate_samples, rebatch, split_item
from ftprobe.data.transforms import ImageTransform, Preset

__all__ = ["DataSource", "DatasetSource", "FileSource"]


class DataSource:
    """Where the images come from; iterate with :meth:`batches`. Build it with :func:`open_data`.

    Attributes:
        kind: ``"image_folder"``, ``"flat_folder"``, ``"csv"``, ``"dataset"``, ``"iterable_dataset"``, ``"dataloader"``
            or ``"iterable"``.
        root: the folder or CSV path (``None`` for in-memory sources).
        num_samples: samples the source will try to yield (after ``limit``, before skipping), ``None`` if unknown.
            A result's ``data["num_samples"]`` is set after the pass by :meth:`pass_counts`: the samples that were
            readable, with ``num_tried`` beside it.
        batch_size: samples per batch (``None`` if the user's loader does not say).
        skipped: ``(path, reason)`` for every unreadable file seen so far in the current pass (grows while iterating).
    """

    kind: str = "?"
    root: str | None = None

    def __init__(self, transform: ImageTransform, limit: int | None, seed: int, batch_size: int | None) -> None:
        self.transform = transform
        self.limit, self.seed, self.batch_size = limit, seed, batch_size
        self._classes: tuple[str, ...] = ()
        self._multilabel = False
        self._has_labels = False
        self.num_samples: int | None = None
        self.skipped: list[tuple[str, str]] = []
        self._extra: dict[str, Any] = {}

    def describe_also(self, **info: Any) -> None:
        """Add entries to what :meth:`describe` reports about this source (recorded in the result's ``data``)."""
        self._extra.update(info)

    def _meta(self) -> None:
        """Hook: make sure label metadata is known (a stream peeks at its first batch)."""

    def image_size(self) -> int | None:
        """The width of the images the batches will carry, when known before the pass (for the probe forward):
        the preprocessing size for decoded files, the first sample's width for tensors supplied by the user."""
        if getattr(self, "_first_size", None):
            return self._first_size
        return getattr(self.transform, "size", None)

    # -- sharding and resuming (distributed runs, checkpoints) -----------------------------------------------------
    _shard: tuple[int, int] = (0, 1)
    _skip_batches: int = 0

    def shard(self, rank: int, world: int) -> None:
        """Keep only this rank's disjoint part of the data: a contiguous block of the selected samples for indexed
        sources, every ``world``-th batch (from ``rank``) for streams whose length is unknown."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world}")
        self._shard = (rank, world)

    def resume_after(self, last_index: int, batches_done: int) -> None:
        """Continue a checkpointed pass: skip what was already consumed (by batch count for streams)."""
        self._skip_batches = batches_done

    def _sharded(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """Streams: round-robin batches across ranks, then skip batches already done."""
        rank, world = self._shard
        k = 0
        for i, b in enumerate(batches):
            if i % world != rank:
                continue
            k += 1
            if k <= self._skip_batches:
                continue
            yield b

    @property
    def preset(self) -> Preset:
        """The normalisation preset applied to images decoded by ftprobe."""
        return self.transform.preset

    @property
    def has_labels(self) -> bool:
        """Whether batches carry labels."""
        self._meta()
        return self._has_labels

    @property
    def multilabel(self) -> bool:
        """Whether labels are ``(N, K)`` multi-hot."""
        self._meta()
        return self._multilabel

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label-index order (empty when unknown)."""
        self._meta()
        return self._classes

    @property
    def num_classes(self) -> int | None:
        """Number of classes, ``None`` when unknown (no labels, or a user source that does not say)."""
        return len(self.classes) if self.classes else None

    def path_of(self, i: int) -> str | None:
        """The file behind global sample index ``i``, ``None`` when the source is not file-backed."""
        return None

    def batches(self) -> Iterator[Batch]:
        """Yield the batches of one pass; raise :class:`DataError` at the end if not a single sample was readable."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance, recorded in results."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "root": self.root,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "multilabel": self.multilabel,
            "has_labels": self.has_labels,
            "batch_size": self.batch_size,
            "preprocess": self.transform.to_dict(),
            "limit": self.limit,
            "seed": self.seed,
            "skipped": len(self.skipped),
            "notes": self.notes(),
        }
        d.update(self._extra)
        return d

    def notes(self) -> list[str]:
        """Things about the data a user should hear before the pass (a ``limit`` above the number of samples)."""
        return []

    def _limit_note(self, available: int, where: str) -> str:
        return (f"--limit {self.limit} is more than the {available} samples in {where}: all {available} are used, "
                "nothing is repeated")

    def pass_counts(self, info: dict[str, Any], skipped: list[tuple[str, str]], samples: int,
                    interrupted: bool) -> dict[str, Any]:
        """Counts for a result once the pass is over, to update ``info`` (this source's :meth:`describe` taken
        before it; in a distributed run, ``skipped`` is every rank's list): ``num_samples`` becomes the samples that
        were readable (``num_tried`` minus the files that failed to decode), and ``skipped`` / ``skipped_files``
        list every unreadable file. ``samples`` is how many the pass streamed."""
        out: dict[str, Any] = {"skipped_files": [{"path": p, "reason": r} for p, r in skipped],
                               "skipped": len(skipped)}
        planned = info.get("num_samples")
        if planned is not None:
            decoded_fail = max(len(skipped) - len(getattr(self, "_scan_skipped", ())), 0)
            out["num_tried"] = planned
            out["num_samples"] = max(planned - decoded_fail, 0)
        elif not interrupted:
            out["num_samples"] = samples
        notes = list(info.get("notes", []))
        if planned is None and not interrupted and self.limit is not None and samples < self.limit:
            notes.append(self._limit_note(samples, f"the {self.kind}"))
        out["notes"] = notes
        return out

    def __repr__(self) -> str:
        return f"<DataSource {self.kind} root={self.root!r} num_samples={self.num_samples}>"

    def _empty_error(self, looked: str) -> DataError:
        first = "; ".join(f"{p}: {r}" for p, r in self.skipped[:3])
        extra = f" First problems: {first}." if first else ""
        return DataError(f"No readable sample in {looked}.{extra} Check the files, or point --data elsewhere.")


def _subset(n: int, limit: int | None, seed: int) -> list[int]:
    """A seeded random subset of ``limit`` positions out of ``n``, in increasing order (all of them if no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


class _IndexedSource(DataSource):
    """Shared by file-backed and map-style Dataset sources: a DataLoader over selected global indices."""

    def __init__(self, dataset: Dataset[Any], n: int, workers: int, pin_memory: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self._dataset, self._workers = dataset, workers
        self._pin = pin_memory and torch.cuda.is_available()
        self._selected = _subset(n, self.limit, self.seed)
        self._scan_skipped: list[tuple[str, str]] = []
        self.num_samples = len(self._selected)
        self._available = n

    @property
    def selected(self) -> list[int]:
        """The global indices of the samples this source streams (after ``--limit``, a shard or a resume)."""
        return list(self._selected)

    def notes(self) -> list[str]:
        if self.limit is not None and self.limit > self._available:
            return [self._limit_note(self._available, self.root or f"the {self._extra.get('type', 'dataset')}")]
        return []

    def shard(self, rank: int, world: int) -> None:
        super().shard(rank, world)
        n = len(self._selected)
        lo, hi = n * rank // world, n * (rank + 1) // world  # contiguous, disjoint, no padded duplicates
        self._selected = self._selected[lo:hi]
        self.num_samples = len(self._selected)

    def resume_after(self, last_index: int, batches_done: int) -> None:
        # Selected indices are increasing and batches keep that order, so everything up to last_index is done.
        self._selected = [i for i in self._selected if i > last_index]
        self.num_samples = len(self._selected)
        self._resumed = True

    def _loader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(
            self._dataset,
            batch_size=self.batch_size,
            sampler=self._selected,
            num_workers=self._workers,
            pin_memory=self._pin,
            collate_fn=collate_samples,
        )

    def _parts(self) -> Iterator[Batch]:
        for raw in self._loader():
            self.skipped.extend(raw["skipped"])
            if raw["x"] is not None:
                yield Batch(raw["x"], raw["labels"], raw["index"])

    def batches(self) -> Iterator[Batch]:
        self.skipped = list(self._scan_skipped)
        seen = 0
        for b in rebatch(self._parts(), self.batch_size or 1):
            seen += len(b)
            yield b
        if seen == 0 and not getattr(self, "_resumed", False) and self._shard[1] == 1:
            raise self._empty_error(f"{self.root or 'the dataset'} ({self.num_samples} samples tried)")


class FileSource(_IndexedSource):
    """Image files from a folder scan or a CSV table; ``path_of`` maps every global index back to its file."""

    def __init__(
        self,
        kind: str,
        root: str,
        paths: list[str],
        labels: Tensor | None,
        classes: tuple[str, ...],
        scan_skipped: list[tuple[str, str]],
        **kw: Any,
    ) -> None:
        super().__init__(FileDataset(paths, labels, kw["transform"]), len(paths), **kw)
        self.kind, self.root, self._paths = kind, root, paths
        self._has_labels = labels is not None
        self._multilabel = labels is not None and labels.dim() == 2
        self._classes = classes
        self._scan_skipped = list(scan_skipped)
        self.skipped = list(scan_skipped)
        self._extra["num_found"] = len(paths)

    def path_of(self, i: int) -> str | None:
        i = int(i)
        return self._paths[i] if 0 <= i < len(self._paths) else None


class DatasetSource(_IndexedSource):
    """A user's map-style Dataset of ``(image, label)``; ``path_of`` uses its ``samples``/``imgs`` when present."""

    kind = "dataset"

    def __init__(self, dataset: Any, **kw: Any) -> None:
        try:
            n = len(dataset)
        except TypeError:
            raise DataError("a map-style Dataset needs __len__; wrap it in a DataLoader instead.") from None
        super().__init__(IndexedDataset(dataset, kw["transform"], functools.partial(_path_in, dataset)), n, **kw)
        self._user = dataset
        self._classes = _classes_of(dataset)
        self._extra["type"] = type(dataset).__name__
        self._extra["preprocess_applies_to"] = "PIL images returned by the dataset; tensors are used as supplied"
        first = next((dataset[i] for i in self._selected[:1]), None)  # one peek: labels must be known before a run
        image = None if first is None else split_item(first)[0]
        self._first_size = int(image.shape[-1]) if isinstance(image, torch.Tensor) and image.dim() >= 2 else None
        label = None if first is None else split_item(first)[1]
        self._has_labels = label is not None
        if label is not None and torch.as_tensor(label).dim() == 1:
            self._multilabel = True
            self._classes = self._classes or tuple(str(k) for k in range(torch.as_tensor(label).numel()))

    def path_of(self, i: int) -> str | None:
        return _path_in(self._user, int(i))


def _classes_of(dataset: Any) -> tuple[str, ...]:
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) for c in classes):
        return tuple(classes)
    return ()


def _path_in(dataset: Any, i: int) -> str | None:
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    if isinstance(samples, (list, tuple)) and 0 <= i < len(samples):
        entry = samples[i]
        path = entry[0] if isinstance(entry, (list, tuple)) and entry else entry
        return os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    return None
