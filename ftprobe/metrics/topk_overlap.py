"""Top-k overlap of maximal-activation images between a base and a fine-tuned model (PAPER.md §3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ftprobe.core.metric import SAME, Metric, Need
from ftprobe.functional.topk import alive_channels, topk_overlap, topk_set_sizes
from ftprobe.metrics._topk_base import TOPK_OPTION_HELP, TopKMetricBase, channels_have, short_sets, summarize

__all__ = ["TopKOverlap"]


class TopKOverlap(TopKMetricBase):
    """Overlap of each channel's top-k maximal-activation images between base and tuned (percent, per channel).

    An image's score for channel c is the spatial mean of the post-ReLU map (``score="max"``: the spatial max);
    only scores > 0 enter. Per channel the top-k images are ranked by score, ties broken by the smaller global
    sample index, so the sets do not depend on batch order or sharding. For each k (Gonthier et al. 2020):

    ``overlap_c = |Top_k^tuned(c) ∩ Top_k^base(c)| / max(|Top_k^tuned(c)|, |Top_k^base(c)|) × 100``

    * when either model has k positive images for the channel, the denominator is k: the study's ``|∩| / k``;
    * when both have fewer (the data holds fewer than k images, or the channel is rarely active), each top-k set is
      the set of all its positive images, and the study's rule for ``k="all"`` applies: divide by the larger set.
      So identical models give 100 at every k. The sizes used are returned (``k_used@k``, ``k_used_min@k``,
      ``k_used_max@k``) with a ``note``, and ``setup`` says so when k is larger than the data;
    * ``k="all"`` uses every positive image and divides by the larger of the two set sizes;
    * a channel with no positive image in either model has no overlap to measure: NaN, left out of the
      distribution, counted as ``dead_in_both`` with a ``note`` (dead in one model only: overlap 0).

    ``compare`` gives, per k: ``overlap_mean@k``, ``overlap_median@k``, ``overlap_q1@k``, ``overlap_q3@k``
    (scalars over the measured channels) and ``overlap@k`` (the ``(C,)`` vector). ``compute`` (per model) gives
    ``dead_channels`` (no positive image) and, for the largest k only, ``topk_index@k`` ``(C, W)`` int64 global
    sample indices (``-1`` = none) and ``topk_score@k`` ``(C, W)`` float64 scores (``-inf`` = none), which map back
    to image files through the data source.

    Options: see :class:`~ftprobe.metrics._topk_base.TopKMetricBase` (``k``, ``score``, ``positive_only``,
    ``max_memory_gb``).

    Example:
        >>> from ftprobe.core.metric import Activation, ModelStep
        >>> base, tuned = TopKOverlap(k=2), TopKOverlap(k=2)
        >>> idx = torch.arange(4)
        >>> base.update(ModelStep("l", Activation("l", {"gap": torch.tensor([[4.0], [3.0], [2.0], [1.0]])}), idx))
        >>> tuned.update(ModelStep("l", Activation("l", {"gap": torch.tensor([[4.0], [1.0], [3.0], [2.0]])}), idx))
        >>> base.compare(base, tuned)["overlap_mean@2"]
        50.0
    """

    name = "topk_overlap"
    needs = Need.ACTIVATIONS
    higher_is_more_similar = True
    identity = {"overlap@*": 100.0, "overlap_mean@*": 100.0, "overlap_median@*": 100.0, "overlap_q1@*": 100.0,
                "overlap_q3@*": 100.0, "topk_index@*": SAME, "topk_score@*": SAME, "dead_channels": SAME}
    title = "Top-k overlap of maximal-activation images"
    description = "Overlap (%) of each channel's top-k images in the base and the tuned model"
    units = {"overlap*": "%"}
    headline = ("overlap_mean@*",)
    interval_keys = ("overlap_median@*",)
    value_names = {"overlap_mean@*": "mean top-{} overlap", "overlap@*": "top-{} overlap"}
    option_help = TOPK_OPTION_HELP
    figure_files = ("topk_overlap_k*.png",)

    @classmethod
    def figures(cls, values: Any) -> Any:
        """Per k: box plots over channels of the overlap, per layer, a box per pair."""
        from .figures import topk_overlap

        return topk_overlap(values.result, values.out, values.metric)

    def compute(self) -> Mapping[str, Any]:
        t = self.final_topk()
        largest = self._ks[-1]
        return {
            "dead_channels": int((~alive_channels(t)).sum()),
            f"topk_index@{largest}": t.index.cpu(),
            f"topk_score@{largest}": t.values.cpu(),
        }

    _short_rule = "the overlap is then divided by the larger set's real size, so identical models still give 100"

    def compare(self, base: Metric, tuned: Metric) -> Mapping[str, Any]:
        b, t = self._check_pair(base, tuned)
        tb, tt = b.final_topk(), t.final_topk()
        channels = max(tb.index.shape[0], tt.index.shape[0])
        out: dict[str, Any] = {}
        notes: list[str] = []
        both = bool(tb.index.shape[0] and tt.index.shape[0])
        live = alive_channels(tb) | alive_channels(tt) if both else torch.zeros(channels, dtype=torch.bool)
        for k in b.ks:
            if both:
                ov = topk_overlap(tb.index, tt.index, k).cpu()
                sizes = torch.maximum(topk_set_sizes(tb.index, k), topk_set_sizes(tt.index, k))
            else:  # one model saw no data: nothing to measure
                ov = torch.full((channels,), float("nan"), dtype=torch.float64)
                sizes = torch.zeros(channels, dtype=torch.int64)
            out.update(summarize(ov, "overlap", k))
            out[f"overlap@{k}"] = ov
            extra, note = short_sets(sizes, k, live, "their overlap is divided by the larger set's size, not by k "
                                     "(identical models give 100)")
            out.update(extra)
            notes.append(note)
        dead = int((~live).sum())
        if dead:
            out["dead_in_both"] = dead
            notes.append(f"{dead} of {channels} channels {channels_have(dead)} no positive image in either model: "
                         "their overlap is undefined (NaN) and left out of the mean, median and quartiles")
        if any(notes):
            out["note"] = "; ".join(n for n in notes if n)
        return out
