"""Top-k overlap of maximal-activation images between a base and a fine-tuned model (PAPER.md §3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ftprobe.core.metric import Metric, Need
from ftprobe.functional.topk import alive_channels, topk_overlap
from ftprobe.metrics._topk_base import TopKMetricBase, summarize

__all__ = ["TopKOverlap"]


class TopKOverlap(TopKMetricBase):
    """Overlap of each channel's top-k maximal-activation images between base and tuned (percent, per channel).

    An image's score for channel c is the spatial mean of the post-ReLU map (``score="max"``: the spatial max);
    only scores > 0 enter. Per channel the top-k images are ranked by score, ties broken by the smaller global
    sample index, so the sets do not depend on batch order or sharding. For each k (Gonthier et al. 2020):

    ``overlap_c = |Top_k^tuned(c) ∩ Top_k^base(c)| / k × 100``

    * a channel with fewer than k positive images has a smaller set, but the denominator is still k (the study's
      rule), so such a channel cannot reach 100 even between identical models;
    * ``k="all"`` uses every positive image and divides by the larger of the two set sizes;
    * a channel with no positive image in either model counts as overlap 0 (and stays in the distribution).

    ``compare`` gives, per k: ``overlap_mean@k``, ``overlap_median@k``, ``overlap_q1@k``, ``overlap_q3@k``
    (scalars over all channels) and ``overlap@k`` (the ``(C,)`` vector). ``compute`` (per model) gives
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

    def compute(self) -> Mapping[str, Any]:
        t = self.final_topk()
        largest = self._ks[-1]
        return {
            "dead_channels": int((~alive_channels(t)).sum()),
            f"topk_index@{largest}": t.index.cpu(),
            f"topk_score@{largest}": t.values.cpu(),
        }

    def compare(self, base: Metric, tuned: Metric) -> Mapping[str, Any]:
        b, t = self._check_pair(base, tuned)
        tb, tt = b.final_topk(), t.final_topk()
        channels = max(tb.index.shape[0], tt.index.shape[0])
        out: dict[str, Any] = {}
        for k in b._ks:
            if tb.index.shape[0] and tt.index.shape[0]:
                ov = topk_overlap(tb.index, tt.index, k).cpu()
            else:  # one model saw no data: nothing overlaps
                ov = torch.zeros(channels, dtype=torch.float64)
            out.update(summarize(ov, "overlap", k))
            out[f"overlap@{k}"] = ov
        return out
