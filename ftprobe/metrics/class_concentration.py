"""Class concentration of each channel's top-k maximal-activation images (PAPER.md §4)."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any

import torch

from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.metric import Metric, Need, RunContext
from ftprobe.functional.concentration import class_histogram, dominant_class, gini, normalized_entropy
from ftprobe.functional.topk import KSpec, alive_channels, topk_prefix
from ftprobe.metrics._topk_base import TopKMetricBase, summarize

__all__ = ["ClassConcentration"]

_MEASURES = ("entropy", "gini")


class ClassConcentration(TopKMetricBase):
    """Class concentration of each channel's top-k images: normalised entropy (or Gini) of their class histogram.

    Uses the same top-k sets as ``topk_overlap`` (same options, one shared state, so no second top-k pass). For
    channel c, ``p_j`` is the share of class j among the labels of its top-k images and (Gonthier et al. 2020)

    ``H_c = −Σ_j p_j log2 p_j / log2(C)``, C = the dataset's number of classes (0 = one class, 1 = uniform);

    with ``measure="gini"``: ``Σ_j p_j (1 − p_j)``. Multi-label data: each label of an image counts once (an image
    with two labels adds one to each class). Channels with no positive image are skipped and counted as
    ``dead_channels``.

    ``compute`` (per model) gives, per k: ``{measure}_mean@k``, ``_median@k``, ``_q1@k``, ``_q3@k`` over alive
    channels, ``{measure}@k`` ``(C,)`` (NaN = dead), ``class_histogram@k`` ``(C, num_classes)`` counts,
    ``dominant_class@k`` ``(C,)`` (-1 = dead) and ``dominant_share@k`` ``(C,)``. ``compare`` gives the change
    tuned − base of the layer mean and median (``{measure}_mean_change@k``, ``{measure}_median_change@k``) and
    ``{measure}_change@k`` ``(C,)``, the per-channel difference (NaN unless the channel is alive in both models).

    Options:
        measure: ``"entropy"`` (default, normalised) or ``"gini"``.
        k, score, positive_only, max_memory_gb: as :class:`~ftprobe.metrics._topk_base.TopKMetricBase`.
    """

    name = "class_concentration"
    needs = Need.ACTIVATIONS | Need.LABELS
    higher_is_more_similar = None

    def __init__(
        self,
        k: KSpec = 100,
        score: str = "mean",
        positive_only: bool = True,
        max_memory_gb: float = 4.0,
        measure: str = "entropy",
        num_classes: int | None = None,
    ) -> None:
        super().__init__(k=k, score=score, positive_only=positive_only, max_memory_gb=max_memory_gb)
        if measure not in _MEASURES:
            raise MetricNeedsError(f"{self.name}: measure={measure!r} is unknown; use measure='entropy' or 'gini'")
        self.measure = measure
        self.num_classes = num_classes

    def setup(self, ctx: RunContext) -> list[str]:
        """``num_classes`` supplies the class count when the data cannot say it (a plain DataLoader)."""
        if self.num_classes is not None:
            if ctx.num_classes is not None and ctx.num_classes != self.num_classes:
                raise MetricNeedsError(
                    f"{self.name}: num_classes={self.num_classes} but the data has {ctx.num_classes} classes; "
                    "drop the option or make them agree"
                )
            ctx = dataclasses.replace(ctx, num_classes=int(self.num_classes))
        return super().setup(ctx)

    def _pair_key(self) -> tuple[Hashable, ...]:
        return (*super()._pair_key(), self.measure)

    def compute(self) -> Mapping[str, Any]:
        if self._num_classes is None:
            raise RuntimeError("class_concentration.compute() needs setup(ctx) first (it gives the class count)")
        t = self.final_topk()
        alive = alive_channels(t)
        if bool(((t.index >= 0) & (t.labels < 0)).any()):
            raise RuntimeError(
                "class_concentration: the top-k state holds images without labels; the engine must pass labels to "
                "the instance it updates when the states are shared"
            )
        out: dict[str, Any] = {"dead_channels": int((~alive).sum())}
        for k in self._ks:
            hist = class_histogram(topk_prefix(t, k).labels, self._num_classes, self._multilabel)
            m = normalized_entropy(hist) if self.measure == "entropy" else gini(hist)
            m = m.masked_fill(~alive, float("nan")).cpu()
            cls, share = dominant_class(hist)
            out.update(summarize(m, self.measure, k))
            out[f"{self.measure}@{k}"] = m
            out[f"class_histogram@{k}"] = hist.cpu()
            out[f"dominant_class@{k}"] = cls.cpu()
            out[f"dominant_share@{k}"] = share.cpu()
        return out

    def compare(self, base: Metric, tuned: Metric) -> Mapping[str, Any]:
        b, t = self._check_pair(base, tuned)
        rb, rt = b.compute(), t.compute()
        name = self.measure
        out: dict[str, Any] = {}
        for k in b._ks:
            out[f"{name}_mean_change@{k}"] = rt[f"{name}_mean@{k}"] - rb[f"{name}_mean@{k}"]
            out[f"{name}_median_change@{k}"] = rt[f"{name}_median@{k}"] - rb[f"{name}_median@{k}"]
            vb, vt = rb[f"{name}@{k}"], rt[f"{name}@{k}"]
            if vb.shape == vt.shape:
                out[f"{name}_change@{k}"] = vt - vb  # NaN where either model's channel is dead
            else:  # one model saw no data
                out[f"{name}_change@{k}"] = torch.full((max(vb.numel(), vt.numel()),), float("nan"))
        return out
