"""The running top-k state shared by ``topk_overlap`` and ``class_concentration`` (one top-k pass serves both).

Both metrics derive from :class:`TopKMetricBase`, declare the same state with the same reduction and return the
same :meth:`~TopKMetricBase.state_key` for the same kept width, score and ``positive_only``; the engine then updates
one instance per (model, layer) and copies its state into the other before ``compute``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ftprobe.core.errors import MetricNeedsError, ModelMismatch
from ftprobe.core.metric import Activation, Metric, ModelStep, Need, OptionHelp, RunContext, Scope
from ftprobe.functional.topk import (
    ALL,
    MAX_MULTILABEL_CLASSES,
    KSpec,
    TopK,
    empty_state,
    finalize_topk,
    kept_width,
    merge_topk,
    normalize_k,
    running_topk_update,
    topk_as_state,
)

__all__ = ["TopKMetricBase", "channels_have", "short_sets", "summarize"]

_SCORE_VIEWS = {"mean": "gap", "max": "max"}
_GB = 1e9


def summarize(values: Tensor, name: str, k: int | str) -> dict[str, float]:
    """Mean, median, first and third quartile of a per-channel vector, NaNs (excluded channels) left out.

    Quantiles use linear interpolation (numpy's default, the one box plots draw). An all-NaN or empty vector gives
    NaN. Keys are ``f"{name}_mean@{k}"`` and so on.
    """
    v = values.detach().to(torch.float64).flatten().cpu()
    v = v[~torch.isnan(v)]
    if v.numel() == 0:
        stats = [math.nan] * 4
    else:
        q = torch.quantile(v, torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64))
        stats = [float(v.mean()), *(float(x) for x in q)]
    return {f"{name}_{s}@{k}": x for s, x in zip(("mean", "median", "q1", "q3"), stats)}


def short_sets(sizes: Tensor, k: int | str, live: Tensor, what: str) -> tuple[dict[str, Any], str]:
    """The values and the caution for top-k sets that hold fewer than k images (too few positive images or data).

    Args:
        sizes: ``(C,)`` the number of images in each channel's top-k set (for overlap: the larger of the two
            models' sets, which is what the overlap is divided by).
        k: the k asked for; ``"all"`` is never short.
        live: ``(C,)`` bool, the channels that are measured (those with at least one image).
        what: how the set sizes enter the value, for the caution (e.g. ``"their overlap is divided by ..."``).

    Returns:
        ``({}, "")`` when every live channel's set holds k images. Otherwise ``k_used@k`` ``(C,)`` (the set sizes),
        ``k_used_min@k`` and ``k_used_max@k`` over the live channels, and one sentence saying so.
    """
    if k == ALL:
        return {}, ""
    used = sizes.to(torch.int64).cpu()
    live = live.cpu()
    short = live & (used < k)
    count = int(short.sum())
    if not count:
        return {}, ""
    lo, hi = int(used[live].min()), int(used[live].max())
    values = {f"k_used@{k}": used, f"k_used_min@{k}": lo, f"k_used_max@{k}": hi}
    span = f"{lo}" if lo == hi else f"{lo} to {hi}"
    note = (f"k={k}: {count} of {int(live.sum())} channels {channels_have(count)} fewer than {k} positive images "
            f"(the data has too few images, or the channel is rarely active), so their top-{k} sets hold {span} "
            f"images; {what}")
    return values, note


def channels_have(count: int) -> str:
    """``"has"`` or ``"have"``, for a sentence about ``count`` channels."""
    return "has" if count == 1 else "have"


def _channels(shape: Sequence[int]) -> int:
    """Channel count of a layer output shape without batch (views layout rule: ``(T, D)`` tokens → ``D``)."""
    if not shape:
        return 1
    return int(shape[-1]) if len(shape) == 2 else int(shape[0])


TOPK_OPTION_HELP: dict[str, str | OptionHelp] = {
    "k": OptionHelp("top-k size: an int, 'all' (every eligible image) or a list, e.g. [100,1000]", flag="k"),
    "score": OptionHelp("channel score: 'mean' (spatial mean, the study's) or 'max' (spatial max)", flag="score"),
    "positive_only": "only images whose score is > 0 enter the top-k sets (the study's rule; default true)",
    "max_memory_gb": "refuse a run whose top-k state is estimated above this (per model; default 4)",
}


class TopKMetricBase(Metric):
    """Base of the top-k metrics: options, the shared running top-k state, ``setup`` checks, ``update``.

    Options:
        k: an int, ``"all"`` (every eligible image), or a list of them; ``max(k)`` images are kept per channel and
            smaller k are prefixes. Default 100.
        score: ``"mean"`` (spatial mean, view ``gap``, the study's) or ``"max"`` (spatial max, view ``max``).
        positive_only: only images whose score is ``> 0`` enter (the study's rule). Default True.
        max_memory_gb: ``setup`` refuses a state estimated above this (per model, all selected layers). Default 4.

    State ``topk``: a running top-k (see :mod:`ftprobe.functional.topk`): float64 scores, int64 global indices,
    int64 labels (class index, or the multi-hot row as a bitmask); merged by concatenation and re-taking the top-k.
    """

    scope = Scope.MODEL
    layerwise = True
    _state_tag: ClassVar[str] = "ftprobe.topk"

    def __init__(
        self, k: KSpec = 100, score: str = "mean", positive_only: bool = True, max_memory_gb: float = 4.0
    ) -> None:
        super().__init__()
        try:
            self._ks = normalize_k(k)
        except ValueError as err:
            raise MetricNeedsError(f"{self.name}: {err}") from None
        if not isinstance(score, str) or score not in _SCORE_VIEWS:
            raise MetricNeedsError(f"{self.name}: score={score!r} is unknown; use score='mean' or score='max'")
        if not (isinstance(max_memory_gb, (int, float)) and max_memory_gb > 0):
            raise MetricNeedsError(f"{self.name}: max_memory_gb must be a positive number, got {max_memory_gb!r}")
        self.k = k if isinstance(k, (int, str)) else tuple(k)
        self.score = score
        self.positive_only = bool(positive_only)
        self.max_memory_gb = float(max_memory_gb)
        width = kept_width(self._ks)
        self._kept: int | str = ALL if width is None else width
        self._num_classes: int | None = None
        self._multilabel = False
        self._cache: tuple[Any, TopK] | None = None
        self.add_state("topk", empty_state(), reduce=functools.partial(merge_topk, k=self._kept))

    # -- what the engine asks -------------------------------------------------------------------------------
    def views(self) -> frozenset[str]:
        return frozenset({_SCORE_VIEWS[self.score]})

    def state_key(self) -> Hashable:
        return (self._state_tag, self._kept, self.score, self.positive_only)

    def setup(self, ctx: RunContext) -> list[str]:
        """Check labels (when needed) and the memory estimate; remember the class count; return the estimate as a
        note (the same text for every layer of a run, so the engine can show it once)."""
        if Need.LABELS in self.needs:
            self._check_labels(ctx)
        self._num_classes = ctx.num_classes
        self._multilabel = bool(ctx.multilabel)
        notes = [self._memory_note(ctx)]
        n = ctx.num_samples
        over = [k for k in self._ks if k != ALL and n is not None and k > n]
        if over:
            ks = " and ".join(f"k={k}" for k in over)
            notes.append(f"{ks} {'is' if len(over) == 1 else 'are'} more than the {n} images of the data: every top-k "
                         f"set holds at most {n} images (the k used, shown as k_used_min@k / k_used_max@k); "
                         f"{self._short_rule}")
        return notes

    #: How a top-k set shorter than k enters the metric's values (said in the cautions).
    _short_rule: ClassVar[str] = "the values are taken over the images the sets hold"

    def _check_labels(self, ctx: RunContext) -> None:
        if not ctx.has_labels:
            raise MetricNeedsError(
                f"{self.name} needs class labels but the data has none. Pass a labelled dataset: class "
                "sub-folders (DATA/<class>/<image>) or a CSV with a label column."
            )
        if ctx.num_classes is None:
            raise MetricNeedsError(
                f"{self.name} needs the number of classes, and this data source does not say it (a DataLoader over a "
                f"dataset without a `classes` attribute): pass -o {self.name}.num_classes=N "
                f"(options={{'{self.name}': {{'num_classes': N}}}} in Python)."
            )
        if ctx.num_classes < 2:
            raise MetricNeedsError(
                f"{self.name} needs at least 2 classes to measure concentration, the data has {ctx.num_classes}. "
                "Check the label column or the class sub-folders of the dataset."
            )
        if ctx.multilabel and ctx.num_classes > MAX_MULTILABEL_CLASSES:
            raise MetricNeedsError(
                f"{self.name} stores multi-label rows as a {MAX_MULTILABEL_CLASSES}-bit mask per image, but the "
                f"data has {ctx.num_classes} classes. Keep at most {MAX_MULTILABEL_CLASSES} classes (filter the "
                "label columns) or use single-label data."
            )

    def _memory_note(self, ctx: RunContext) -> str:
        channels = [_channels(s) for s in ctx.shapes.values()]
        total_c, max_c = sum(channels), max(channels, default=0)
        n = ctx.num_samples
        if self._kept == ALL:
            if n is None:
                return "k='all' keeps every positive image; the data source has no length, so memory is unknown"
            # raw float64 scores during the pass; the final sort of the widest layer needs ~40 more bytes per slot
            need = 8 * n * total_c + 40 * n * max_c
        else:
            width = int(self._kept)
            slots = width + max(width, 128) + (ctx.batch_size or 0)
            if n is not None:
                slots = min(slots, n)
            need = 24 * slots * total_c
        gb = need / _GB
        what = f"{len(channels)} layer(s), {total_c} channels, k={self._kept!r}, {n} samples"
        if gb > self.max_memory_gb:
            raise MetricNeedsError(
                f"{self.name}: the top-k state would need about {gb:.2f} GB per model ({what}), over "
                f"max_memory_gb={self.max_memory_gb:g}. Use a finite k (e.g. k=(100, 1000)), select fewer layers "
                "or fewer samples, or raise max_memory_gb."
            )
        size = f"{gb:.2f} GB" if gb >= 0.1 else f"{need / 1e6:.1f} MB"
        return f"top-k state about {size} per model ({what})"

    # -- streaming ----------------------------------------------------------------------------------------------
    def update(self, step: ModelStep) -> None:
        act: Activation = step.act
        scores = act.view(_SCORE_VIEWS[self.score])
        labels = step.labels
        if labels is not None and labels.dim() == 2 and labels.shape[1] > MAX_MULTILABEL_CLASSES:
            if Need.LABELS in self.needs:
                raise MetricNeedsError(f"{self.name}: more than {MAX_MULTILABEL_CLASSES} multi-label classes")
            labels = None  # top-k overlap does not need them
        self.topk = running_topk_update(self.topk, scores, step.index, labels, self._kept, self.positive_only)

    def final_topk(self) -> TopK:
        """The canonical top-``max(k)`` of the state (sorted once, cached until the state changes)."""
        if self._cache is None or self._cache[0] is not self.topk:
            final = finalize_topk(self.topk, self._kept)
            if self.topk["values"]:  # keep the canonical form instead of the raw chunks: same set, less memory
                self.topk = topk_as_state(final)
            self._cache = (self.topk, final)
        return self._cache[1]

    def _check_pair(self, base: Metric, tuned: Metric) -> tuple[TopKMetricBase, TopKMetricBase]:
        for m in (base, tuned):
            if type(m) is not type(self):
                raise TypeError(f"{type(self).__name__}.compare needs two {type(self).__name__}, got {type(m)}")
        assert isinstance(base, TopKMetricBase) and isinstance(tuned, TopKMetricBase)
        if base.pair_key() != tuned.pair_key():
            raise ValueError(f"cannot compare {self.name} instances with different options: {base!r} vs {tuned!r}")
        cb, ct = base.final_topk().values.shape[0], tuned.final_topk().values.shape[0]
        if cb and ct and cb != ct:
            raise ModelMismatch(
                f"{self.name}: the base layer has {cb} channels and the tuned layer {ct}; compare layers of the same "
                "architecture (run `ftprobe layers MODEL` on both models)."
            )
        return base, tuned

    @property
    def ks(self) -> tuple[Any, ...]:
        """The top-k sizes, smallest first (``"all"`` last)."""
        return tuple(self._ks)

    def pair_key(self) -> tuple[Any, ...]:
        """The options two instances must share to be compared."""
        return (self._ks, self.score, self.positive_only)
