"""Tiny seeded data for metric tests: synthetic activations of two layers, a labelled image dataset, model pairs, and
an activation view map that records which views a metric reads.

The synthetic run mimics what the engine hands a metric: post-ReLU conv maps ``(N, C, H, W)`` of two layers named as
the study's (``mixed4a``, ``mixed5b``) with the shapes :class:`~ftprobe.testing.TinyNet` ``(width=4)`` gives at
16 px, class-dependent channel means, correlated channels, one dead channel, global sample indices and an uneven last
batch (16, 16, 16, 11 samples). Everything is seeded, so two calls give the same tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ftprobe.core.engine import MetricRequest
from ftprobe.core.metric import Activation, Metric, Need, RunContext
from ftprobe.core.plan import ModelFeed, Plan, Topology, model_scoped
from ftprobe.core.views import compute_views

from .models import TinyNet, perturbed_copy

__all__ = [
    "BATCH_SIZES",
    "Harness",
    "LAYERS",
    "SHAPES",
    "RecordingViews",
    "SyntheticBatch",
    "SyntheticRun",
    "TinyImages",
    "ViewLog",
    "model_scoped",
    "natural_images",
    "synthetic_run",
    "tiny_pair",
]

LAYERS: tuple[str, ...] = ("mixed4a", "mixed5b")
SHAPES: dict[str, tuple[int, int, int]] = {"mixed4a": (8, 4, 4), "mixed5b": (16, 2, 2)}  # TinyNet(width=4), 16 px
BATCH_SIZES: tuple[int, ...] = (16, 16, 16, 11)  # 59 samples: more than the 2 × 16 channels CCA needs
CLASSES: tuple[str, ...] = ("class_0", "class_1", "class_2")
DEAD = ("mixed5b", 0)  # (layer, channel) that is zero for every sample in both models


@dataclass(frozen=True)
class SyntheticBatch:
    """One batch: ``index`` ``(N,)`` int64 global indices, ``labels`` ``(N,)`` int64, and per layer the raw
    ``(N, C, H, W)`` float32 activations of the base and the tuned model."""

    index: Tensor
    labels: Tensor
    base: dict[str, Tensor]
    tuned: dict[str, Tensor]

    @property
    def size(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class SyntheticRun:
    """A stream of :class:`SyntheticBatch` over ``layers`` (shapes without the batch axis in ``shapes``)."""

    batches: tuple[SyntheticBatch, ...]
    layers: tuple[str, ...] = LAYERS
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: dict(SHAPES))
    classes: tuple[str, ...] = CLASSES

    @property
    def num_samples(self) -> int:
        return sum(b.size for b in self.batches)

    def joined(self) -> SyntheticRun:
        """The same samples as one batch (the "one-shot" side of streaming tests)."""
        bs = self.batches
        one = SyntheticBatch(
            torch.cat([b.index for b in bs]),
            torch.cat([b.labels for b in bs]),
            {k: torch.cat([b.base[k] for b in bs]) for k in self.layers},
            {k: torch.cat([b.tuned[k] for b in bs]) for k in self.layers},
        )
        return replace(self, batches=(one,))

    def shards(self, count: int) -> list[SyntheticRun]:
        """Disjoint shards, batch ``i`` going to shard ``i % count`` (how ranks interleave in a distributed run)."""
        return [replace(self, batches=self.batches[s::count]) for s in range(count)]

    def prefix(self, batches: int) -> tuple[SyntheticRun, SyntheticRun]:
        """The first ``batches`` batches and the rest (a checkpoint taken mid-stream)."""
        return replace(self, batches=self.batches[:batches]), replace(self, batches=self.batches[batches:])

    def with_labels(self, labels: Tensor) -> SyntheticRun:
        """The same activations with other labels (``(num_samples,)``, in stream order)."""
        parts = labels.split([b.size for b in self.batches])
        return replace(self, batches=tuple(replace(b, labels=p) for b, p in zip(self.batches, parts)))

    def context(self, has_labels: bool) -> RunContext:
        """The :class:`RunContext` the engine would give a metric for this run."""
        return RunContext(
            layers=self.layers,
            shapes=dict(self.shapes),
            batch_size=max(b.size for b in self.batches),
            num_samples=self.num_samples,
            has_labels=has_labels,
            num_classes=len(self.classes) if has_labels else None,
            classes=self.classes if has_labels else (),
        )


def synthetic_run(sizes: Sequence[int] = BATCH_SIZES, *, identical: bool = False, seed: int = 0) -> SyntheticRun:
    """A seeded stream of post-ReLU activations of two layers for a base and a tuned model.

    Args:
        sizes: the batch sizes, in stream order (global indices run ``0 … sum(sizes) - 1``).
        identical: the tuned activations are copies of the base's (the identical-pair sanity check).
        seed: the generator seed.

    Returns:
        A :class:`SyntheticRun` with labels in ``[0, 3)`` and channel 0 of ``mixed5b`` dead in both models.
    """
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    base: dict[str, Tensor] = {}
    tuned: dict[str, Tensor] = {}
    for layer in LAYERS:
        c, h, w = SHAPES[layer]
        class_means = 1.5 * torch.randn(len(CLASSES), c, generator=g)
        mix = torch.eye(c) + 0.4 * torch.randn(c, c, generator=g)
        pre = torch.einsum("nchw,cd->ndhw", torch.randn(n, c, h, w, generator=g), mix)
        pre = pre + class_means[labels][:, :, None, None]
        change = torch.eye(c) + 0.5 * torch.randn(c, c, generator=g)
        moved = torch.einsum("nchw,cd->ndhw", pre, change) + 0.5 * torch.randn(n, c, h, w, generator=g)
        base[layer] = torch.relu(pre)
        tuned[layer] = base[layer].clone() if identical else torch.relu(moved)
        if layer == DEAD[0]:
            base[layer][:, DEAD[1]] = 0.0
            tuned[layer][:, DEAD[1]] = 0.0
    batches, lo = [], 0
    for size in sizes:
        sl = slice(lo, lo + size)
        batches.append(SyntheticBatch(torch.arange(lo, lo + size), labels[sl].clone(),
                                      {k: v[sl].clone() for k, v in base.items()},
                                      {k: v[sl].clone() for k, v in tuned.items()}))
        lo += size
    return SyntheticRun(tuple(batches))


class TinyImages(Dataset):  # type: ignore[type-arg]
    """A seeded, labelled map-style dataset of ``(3, size, size)`` float images with a ``classes`` attribute (so the
    engine knows the class count), for end-to-end runs of :func:`ftprobe.compare` with ``preprocess="none"``."""

    def __init__(self, n: int = 24, size: int = 16, classes: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.classes = [f"class_{i}" for i in range(classes)]
        self.labels = torch.arange(n) % classes
        tint = torch.randn(classes, 3, 1, 1, generator=g)
        self.images = torch.randn(n, 3, size, size, generator=g) + tint[self.labels]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


def tiny_pair(width: int = 4, noise: float = 0.2, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A seeded :class:`TinyNet` and a perturbed copy (a stand-in fine-tune); layers ``mixed4a``, ``mixed5b`` … ."""
    base = TinyNet(width=width, seed=seed)
    return base, perturbed_copy(base, noise=noise, seed=seed + 1)


# ----------------------------------------------------------------------------------------------------------------
# Recording which views a metric reads


@dataclass
class ViewLog:
    """What metrics read through :class:`RecordingViews`: the views present and read, the views asked for but not
    there, and (tensor, copy) pairs to check afterwards that no view was modified in place."""

    read: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    given: list[tuple[str, Tensor, Tensor]] = field(default_factory=list)

    def modified(self) -> list[str]:
        """Views whose tensor changed after it was handed to a metric (``"layer/view"``)."""
        return sorted({name for name, t, copy in self.given if not torch.equal(t, copy)})


class RecordingViews(Mapping[str, Tensor]):
    """The ``views`` mapping of an :class:`~ftprobe.core.metric.Activation` that logs every read into a
    :class:`ViewLog` (``act.view(name)``, ``act[name]`` and ``act.views[name]`` all come through here)."""

    def __init__(self, layer: str, views: Mapping[str, Tensor], log: ViewLog) -> None:
        self._layer, self._views, self._log = layer, dict(views), log
        for name, t in self._views.items():
            log.given.append((f"{layer}/{name}", t, t.clone()))

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._views:
            self._log.missing.add(name)
            raise KeyError(name)
        self._log.read.add(name)
        return self._views[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)


# ----------------------------------------------------------------------------------------------------------------
# Feeding a metric the way the engine does


class Harness:
    """The instances of one metric for a run, built, set up and fed by the engine's own plan
    (:class:`ftprobe.core.plan.Plan`) over the synthetic activations.

    One instance per layer (``layerwise``) or one for all layers; per side ``"pair"``, or ``"base"`` and ``"tuned"``
    for ``Scope.MODEL``. ``spec`` is anything with ``metric_cls`` and ``kwargs`` (a ``ContractSpec``).
    """

    def __init__(self, spec: Any, run: SyntheticRun, labels: bool | None = None) -> None:
        self.cls: type[Metric] = spec.metric_cls
        self.labels = Need.LABELS in self.cls.needs if labels is None else labels
        self.layers = run.layers
        layers = list(run.layers)
        topo = Topology(
            labels=["base", "tuned"], pairs=[(0, 1)], layers=layers, names=[{k: k for k in layers}] * 2,
            shapes=[dict(run.shapes)] * 2, counts=[len(layers)] * 2, paired=True, same_arch=[True, True],
            units={(0, 1): True}, widths_differ={(0, 1): []},
        )
        name = str(getattr(self.cls, "name", self.cls.__name__))
        request = MetricRequest(name, self.cls, dict(spec.kwargs), explicit=True)  # a refusal fails the test
        self.plan = Plan(topo, notice=lambda msg: None).build([request], run.context(self.labels))
        sides = {0: "base", 1: "tuned"}
        self.metrics = {(sides[f.model] if isinstance(f, ModelFeed) else "pair", f.layer): f.metric
                        for f in self.plan.feeds}

    def views(self) -> frozenset[str]:
        return next(iter(self.metrics.values())).views()

    def feed(self, run: SyntheticRun, weights: tuple[nn.Module, nn.Module] | None = None,
             log: ViewLog | None = None) -> Harness:
        """The weight pass (when the metric needs weights and ``weights`` are given), then every batch of ``run``."""
        if weights is not None:
            self.plan.feed_weights(weights)
        if self.plan.needs_data:
            with torch.inference_mode():
                for batch in run.batches:
                    self._step(batch, log if log is not None else ViewLog())
        return self

    def _step(self, batch: SyntheticBatch, log: ViewLog) -> None:
        wanted = self.views()
        acts = [{layer: Activation(layer, RecordingViews(layer, compute_views(raw[layer], wanted), log))
                 for layer in self.layers} for raw in (batch.base, batch.tuned)]
        self.plan.feed(acts, batch.index, batch.labels if self.labels else None)

    def outputs(self) -> dict[str, Any]:
        """``{"compute": {side: {layer: values}}}``, plus ``"compare": {layer: values}`` for ``Scope.MODEL``."""
        out: dict[str, Any] = {"compute": {}}
        for (side, key), metric in self.metrics.items():
            values = dict(metric.compute())
            out["compute"].setdefault(side, {}).update(values if key is None else {key: values})
        if model_scoped(self.cls):
            out["compare"] = {}
            for c in self.plan.comparisons:
                values = dict(c.base.metric.compare(c.base.metric, c.tuned.metric))
                out["compare"].update(values if c.base.layer is None else {c.base.layer: values})
        return out

    def merge(self, other: Harness) -> None:
        for k, metric in self.metrics.items():
            metric.merge_state(other.metrics[k])

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def states(self) -> dict[str, Any]:
        return {f"{side}/{key}": metric.state_dict() for (side, key), metric in self.metrics.items()}

    def load(self, states: Mapping[str, Any]) -> None:
        for (side, key), metric in self.metrics.items():
            metric.load_state_dict(states[f"{side}/{key}"])


def natural_images(n: int, size: int, seed: int = 0) -> Tensor:
    """Seeded natural-ish RGB images in ``[0, 1]``: ``(n, 3, size, size)`` float32.

    Each has a 1/f amplitude spectrum (as natural photographs have; drawn with
    :class:`~ftprobe.viz.FourierImage`, no colour mixing), contrast 0.2 (standard deviation) and a random mean colour
    in ``[0.2, 0.8]`` per channel: the "dataset" that feature visualisation is measured against.

    Example:
        >>> x = natural_images(4, 16)
        >>> tuple(x.shape), bool(((x >= 0) & (x <= 1)).all()), torch.equal(x, natural_images(4, 16))
        ((4, 3, 16, 16), True, True)
    """
    from ftprobe.viz import FourierImage

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        raw = FourierImage(n, size, decorrelate=False, generator=g, sd=1.0).raw().double()
    raw = raw - raw.mean(dim=(2, 3), keepdim=True)
    raw = raw / raw.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    colour = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64) * 0.6 + 0.2
    return (0.2 * raw + colour).clamp(0, 1).float()
