"""Sources that stream a user's batches as they come: a DataLoader, an IterableDataset, or any iterable of batches.

Batches are used as supplied (no preprocessing). ``(x, y)`` batches get running indices (samples counted so far);
``(x, y, index)`` batches and dict batches with an ``index`` key keep theirs. ``limit=N`` keeps the *first* N samples
(a stream cannot be sampled at random without reading it all); ``describe()["limit_mode"]`` says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, SubsetRandomSampler, WeightedRandomSampler

from ftprobe.core.errors import DataError
from ftprobe.data.loaders import Batch, parse_batch
from ftprobe.data.sources import DataSource, _classes_of, _path_in

__all__ = ["LoaderSource", "ShuffledLoaderWarning"]

_NOTHING = object()


class ShuffledLoaderWarning(UserWarning):
    """A shuffled DataLoader yields batches without indices: results tied to sample identity cannot map to files."""


def is_shuffled(loader: DataLoader) -> bool:  # type: ignore[type-arg]
    """True when the loader's sampler draws samples in random order."""
    sampler = loader.sampler
    if isinstance(sampler, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)):
        return True
    return getattr(sampler, "shuffle", False) is True  # DistributedSampler(shuffle=True)


def _count(source: Any) -> int | None:
    """Samples a source will yield, when it can be known without iterating."""
    try:
        if isinstance(source, DataLoader):
            if source.batch_size is None:
                return None
            if source.drop_last:
                return len(source) * source.batch_size
            return len(source.sampler)  # type: ignore[arg-type]
        if isinstance(source, (list, tuple)):
            return sum(int(parse_batch(b)[0].shape[0]) for b in source)
    except TypeError:  # an IterableDataset without __len__
        return None
    return None


class LoaderSource(DataSource):
    """A user's DataLoader / iterable of batches, streamed once per :meth:`batches` call."""

    def __init__(self, source: Iterable[Any], kind: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.kind = kind
        self._source = source
        self._pending: tuple[Iterator[Any], Any] | None = None
        self._peeked = False
        loader = source if isinstance(source, DataLoader) else None
        self._dataset = loader.dataset if loader is not None else None
        self._shuffled = loader is not None and is_shuffled(loader)
        self._sequential = loader is not None and not self._shuffled and kind == "dataloader"
        self._classes = _classes_of(self._dataset)
        if loader is not None:
            self.batch_size = loader.batch_size
        elif kind == "iterable":
            self.batch_size = None
        count = _count(source)
        self._count = count
        self.num_samples = count if self.limit is None or count is None else min(count, self.limit)
        self._extra["limit_mode"] = "first"
        self._extra["shuffled"] = self._shuffled
        self._extra["preprocess_applies_to"] = "nothing: batches are used as supplied"

    def notes(self) -> list[str]:
        if self.limit is not None and self._count is not None and self.limit > self._count:
            return [self._limit_note(self._count, f"the {self.kind}")]
        return []

    def _meta(self) -> None:
        if self._peeked:
            return
        self._peeked = True
        it = iter(self._source)
        first = next(it, _NOTHING)
        if first is _NOTHING:
            return
        self._pending = (it, first)
        self._learn(parse_batch(first)[1])

    def image_size(self) -> int | None:
        self._meta()
        if self._pending is not None:
            x = parse_batch(self._pending[1])[0]
            if isinstance(x, torch.Tensor) and x.dim() >= 2:
                return int(x.shape[-1])
        return None

    def _learn(self, labels: torch.Tensor | None) -> None:
        """Label metadata from the first batch."""
        self._peeked = True
        self._has_labels = labels is not None
        if labels is not None and labels.dim() == 2:
            self._multilabel = True
            self._classes = self._classes or tuple(str(k) for k in range(labels.shape[1]))

    def path_of(self, i: int) -> str | None:
        # Running indices are dataset positions only when the loader reads its dataset in order.
        return _path_in(self._dataset, int(i)) if self._sequential else None

    def _stream(self) -> Iterator[Any]:
        if self._pending is not None:
            it, first = self._pending
            self._pending = None
            return _replay(first, it)
        return iter(self._source)

    def batches(self) -> Iterator[Batch]:
        return self._sharded(self._batches())

    def _batches(self) -> Iterator[Batch]:
        self.skipped = []
        offset = seen = 0
        warned = False
        for raw in self._stream():
            x, labels, index = parse_batch(raw)
            if not self._peeked:  # iterated before anyone asked about labels: learn them now, not by re-reading
                self._learn(labels)
            n = int(x.shape[0])
            if index is None:
                if self._shuffled and not warned:
                    warnings.warn(
                        "the DataLoader shuffles and its batches carry no index: results that depend on sample "
                        "identity (top-k images) cannot be mapped back to files. Pairing stays correct, since every "
                        "model sees each batch once. Use shuffle=False, or yield (images, labels, index) batches.",
                        ShuffledLoaderWarning,
                        stacklevel=2,
                    )
                    warned = True
                index = torch.arange(offset, offset + n, dtype=torch.int64)
            offset += n
            if self.limit is not None and seen + n > self.limit:
                keep = self.limit - seen
                x, index = x[:keep], index[:keep]
                labels = None if labels is None else labels[:keep]
                n = keep
            if n:
                seen += n
                yield Batch(x, labels, index)
            if self.limit is not None and seen >= self.limit:
                break
        if seen == 0:
            once = " (a generator or iterator can be iterated only once)" if isinstance(self._source, Iterator) else ""
            raise DataError(f"The {self.kind} yielded no samples{once}. Give it at least one non-empty batch.")


def _replay(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    """The peeked first batch, then the rest. Unlike ``itertools.chain([first], rest)``, which keeps its argument
    tuple (and so the first batch's images) alive until the whole stream is read, this drops the batch once it is
    consumed."""
    yield first
    del first
    yield from rest
