"""Class concentration of each channel's top-k maximal-activation images (PAPER.md §4)."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any

import torch

from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.metric import SAME, Metric, Need, RunContext
from ftprobe.functional.concentration import class_histogram, dominant_class, gini, normalized_entropy
from ftprobe.functional.topk import KSpec, alive_channels, topk_prefix, topk_set_sizes
from ftprobe.metrics._topk_base import TOPK_OPTION_HELP, TopKMetricBase, channels_have, short_sets, summarize

__all__ = ["ClassConcentration"]

_MEASURES = ("entropy", "gini")


class ClassConcentration(TopKMetricBase):
    """Class concentration of each channel's top-k images: normalised entropy (or Gini) of their class histogram.

    Uses the same top-k sets as ``topk_overlap`` (same options, one shared state, so no second top-k pass). For
    channel c, ``p_j`` is the share of class j among the labels of its top-k images and (Gonthier et al. 2020)

    ``H_c = −Σ_j p_j log2 p_j / log2(C)``, C = the dataset's number of classes (0 = one class, 1 = uniform);

    with ``measure="gini"``: ``Σ_j p_j (1 − p_j)``. Multi-label data: each label of an image counts once (an image
    with two labels adds one to each class). Channels with no positive image are skipped and counted as
    ``dead_channels``. A channel with fewer than k positive images (or data with fewer than k images) has a shorter
    set, and its histogram counts the images the set holds; then ``k_used@k`` ``(C,)``, ``k_used_min@k`` and
    ``k_used_max@k`` give the sizes, with a ``note`` (and ``setup`` says so when k is larger than the data).

    ``compute`` (per model) gives, per k: ``{measure}_mean@k``, ``_median@k``, ``_q1@k``, ``_q3@k`` over alive
    channels, ``{measure}@k`` ``(C,)`` (NaN = dead), ``class_histogram@k`` ``(C, num_classes)`` counts,
    ``dominant_class@k`` ``(C,)`` (-1 = dead) and ``dominant_share@k`` ``(C,)``. ``compare`` gives the change
    tuned − base of the layer mean and median (``{measure}_mean_change@k``, ``{measure}_median_change@k``) and
    ``{measure}_change@k`` ``(C,)``, the per-channel difference (NaN unless the channel is alive in both models),
    left out (with a note) when the channels do not correspond: models of different architectures, or a layer
    whose width differs (a replaced head).

    Options:
        measure: ``"entropy"`` (default, normalised) or ``"gini"``.
        k, score, positive_only, max_memory_gb: as :class:`~ftprobe.metrics._topk_base.TopKMetricBase`.
    """

    name = "class_concentration"
    needs = Need.ACTIVATIONS | Need.LABELS
    # Per-model values and the change of the layer's mean and median compare across architectures; the per-channel
    # change is given only where the two models' channels correspond (same architecture, same width).
    pairs_units = False
    higher_is_more_similar = None
    # identical models: every per-model value equal, every change (layer mean, median, per channel) zero
    identity = {"*@*": SAME, "dead_channels": SAME, "*_change@*": 0.0}
    title = "Class concentration of the top-k images"
    description = "How few classes each channel's top-k images come from (normalised entropy or Gini; low = few)"
    headline = ("entropy_mean@*", "gini_mean@*")
    value_names = {"entropy_mean@*": "mean normalised entropy of the top-{} images",
                   "gini_mean@*": "mean Gini of the top-{} images"}
    option_help = {"measure": "'entropy' (default, normalised) or 'gini'", **TOPK_OPTION_HELP,
                   "num_classes": "the class count when the data cannot say it (a plain DataLoader)"}
    figure_files = ("class_concentration_k*.png", "overlap_vs_concentration_k*.png")

    @classmethod
    def figures(cls, values: Any) -> Any:
        """Per k: box plots of each model's concentration per layer, then overlap against concentration (a point
        per channel) when the result also holds the top-k overlap of the same k."""
        from .figures import class_concentration, overlap_vs_concentration

        return class_concentration(values.result, values.out, values.metric) + overlap_vs_concentration(
            values.result, values.out, values.metric)

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
        self._units_paired = ctx.units_paired
        if self.num_classes is not None:
            if ctx.num_classes is not None and ctx.num_classes != self.num_classes:
                raise MetricNeedsError(
                    f"{self.name}: num_classes={self.num_classes} but the data has {ctx.num_classes} classes; "
                    "drop the option or make them agree"
                )
            ctx = dataclasses.replace(ctx, num_classes=int(self.num_classes))
        return super().setup(ctx)

    def pair_key(self) -> tuple[Hashable, ...]:
        return (*super().pair_key(), self.measure)

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
        dead = int((~alive).sum())
        out: dict[str, Any] = {"dead_channels": dead}
        notes = [f"{dead} of {alive.numel()} channels {channels_have(dead)} no positive image (dead_channels): their "
                 f"{self.measure} is undefined (NaN) and left out of the mean, median and quartiles" if dead else ""]
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
            extra, note = short_sets(topk_set_sizes(t.index, k), k, alive, self._short_rule)
            out.update(extra)
            notes.append(note)
        if any(notes):
            out["note"] = "; ".join(n for n in notes if n)
        return out

    _short_rule = ("each class histogram counts the images its set holds, so a channel's concentration rests on "
                   "fewer images than k (a set of n images has entropy at most log2(n) / log2(C))")

    def compare(self, base: Metric, tuned: Metric) -> Mapping[str, Any]:
        widths = [m.final_topk().values.shape[0] if isinstance(m, TopKMetricBase) else 0 for m in (base, tuned)]
        units = getattr(self, "_units_paired", True) and not (all(widths) and widths[0] != widths[1])
        if units:
            b, t = self._check_pair(base, tuned)
        else:  # another architecture or width: the channels do not correspond, the layer summaries still compare
            b, t = self._check_pair(base, base)[0], self._check_pair(tuned, tuned)[0]  # types, no channel check
            if b.pair_key() != t.pair_key():
                raise ValueError(f"cannot compare {self.name} instances with different options: {b!r} vs {t!r}")
        rb, rt = b.compute(), t.compute()
        name = self.measure
        out: dict[str, Any] = {}
        for k in b.ks:
            out[f"{name}_mean_change@{k}"] = rt[f"{name}_mean@{k}"] - rb[f"{name}_mean@{k}"]
            out[f"{name}_median_change@{k}"] = rt[f"{name}_median@{k}"] - rb[f"{name}_median@{k}"]
            if not units:
                continue
            vb, vt = rb[f"{name}@{k}"], rt[f"{name}@{k}"]
            if vb.shape == vt.shape:
                out[f"{name}_change@{k}"] = vt - vb  # NaN where either model's channel is dead
            else:  # one model saw no data
                out[f"{name}_change@{k}"] = torch.full((max(vb.numel(), vt.numel()),), float("nan"))
        nb, nt = rb.get("note", ""), rt.get("note", "")
        if nb or nt:  # the pair's change rests on the same short sets: say so beside it
            out["note"] = f"both models: {nb}" if nb == nt else "; ".join(
                f"{side}: {n}" for side, n in (("base", nb), ("tuned", nt)) if n)
        if not units:
            why = (f"no per-channel change: the two models' channels do not correspond ({widths[0]} and {widths[1]} "
                   "channels, or another architecture); the layer's mean and median change are given")
            out["note"] = f"{out['note']}; {why}" if out.get("note") else why
        return out
