"""Class concentration of each channel's top-k images: class histogram, normalised entropy, Gini (PAPER.md §4).

For a channel c with top-k set ``Top_k(c)`` the class histogram counts the labels of those images; ``p_j`` is the
histogram divided by its total. The study's measure is the normalised entropy
``H_c = −Σ_j p_j log2 p_j / log2(C)`` (``C`` = number of classes of the dataset, not the number of classes seen):
0 when every top image has the same class, 1 when the classes are uniform. The Gini option is ``Σ_j p_j (1 − p_j)``
(0 for one class, ``1 − 1/C`` for uniform; not normalised, as in the study).

Multi-label data: each label of an image counts once, so an image with two labels adds one to each of the two
classes and ``p`` is normalised by the total number of labels in the set. A channel with no labelled image in its
set (a dead channel) has an all-zero histogram and a NaN measure.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["class_concentration", "class_histogram", "dominant_class", "gini", "normalized_entropy"]


def class_histogram(labels_of_topk: Tensor, num_classes: int, multilabel: bool = False) -> Tensor:
    """Class counts of each channel's top-k images.

    Args:
        labels_of_topk: ``(C, W)`` int64: class indices (single-label) or bitmasks (multi-label, see
            :func:`ftprobe.functional.topk.pack_multihot`); negative entries are missing slots and are ignored.
        num_classes: the number of classes of the dataset.
        multilabel: whether the entries are bitmasks.

    Returns:
        ``(C, num_classes)`` float64 counts.

    Example:
        >>> class_histogram(torch.tensor([[0, 2, 2, -1]]), 3).tolist()
        [[1.0, 0.0, 2.0]]
    """
    if labels_of_topk.dim() != 2:
        raise ValueError(f"labels_of_topk must be (C, W), got shape {tuple(labels_of_topk.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    lab = labels_of_topk.to(torch.int64)
    valid = lab >= 0
    rows = lab.shape[0]
    if multilabel:
        hist = torch.zeros(rows, num_classes, dtype=torch.float64, device=lab.device)
        for j in range(num_classes):  # a loop over classes (<= 63), never over channels
            hist[:, j] = (((lab >> j) & 1).bool() & valid).sum(dim=1).to(torch.float64)
        return hist
    if lab.numel() and int(lab.max()) >= num_classes:
        raise ValueError(f"a label {int(lab.max())} is out of range for num_classes={num_classes}")
    hist = torch.zeros(rows, num_classes, dtype=torch.float64, device=lab.device)
    return hist.scatter_add_(1, lab.clamp(min=0), valid.to(torch.float64))


def _probabilities(hist: Tensor) -> Tensor:
    total = hist.sum(dim=-1, keepdim=True)
    return hist.to(torch.float64) / total  # 0/0 = NaN for an empty row, on purpose


def normalized_entropy(hist: Tensor) -> Tensor:
    """``−Σ p_j log2 p_j / log2(C)`` per row, ``C = hist.shape[-1]`` (>= 2); NaN for an all-zero row.

    Args:
        hist: ``(..., C)`` non-negative counts or probabilities.

    Returns:
        ``(...)`` float64 in ``[0, 1]``.

    Example:
        >>> normalized_entropy(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 5.0, 0.0, 0.0]])).tolist()
        [1.0, 0.0]
    """
    num_classes = hist.shape[-1]
    if num_classes < 2:
        raise ValueError(f"normalised entropy needs at least 2 classes, got {num_classes}")
    p = _probabilities(hist)
    h = 0.0 - torch.special.xlogy(p, p).sum(dim=-1)  # 0 log 0 = 0; 0.0 - x avoids printing -0.0
    return h / math.log(num_classes)


def gini(hist: Tensor) -> Tensor:
    """Gini impurity ``Σ p_j (1 − p_j)`` per row; NaN for an all-zero row.

    Args:
        hist: ``(..., C)`` non-negative counts or probabilities.

    Returns:
        ``(...)`` float64 in ``[0, 1 − 1/C]``.

    Example:
        >>> gini(torch.tensor([[2.0, 2.0], [0.0, 3.0]])).tolist()
        [0.5, 0.0]
    """
    p = _probabilities(hist)
    return (p * (1.0 - p)).sum(dim=-1)


def dominant_class(hist: Tensor) -> tuple[Tensor, Tensor]:
    """The most frequent class of each row (the smallest class index on a tie) and its share ``p_j``.

    Args:
        hist: ``(C, K)`` counts.

    Returns:
        ``(C,)`` int64 class (``-1`` for an all-zero row) and ``(C,)`` float64 share (NaN for an all-zero row).
    """
    p = _probabilities(hist)
    empty = hist.sum(dim=-1) == 0
    share, cls = torch.nan_to_num(p, nan=-1.0).max(dim=-1)
    return cls.masked_fill(empty, -1), share.masked_fill(empty, float("nan"))


def class_concentration(
    labels_of_topk: Tensor,
    num_classes: int,
    multilabel: bool = False,
    measure: Literal["entropy", "gini"] = "entropy",
) -> Tensor:
    """One-shot twin of the metric: the concentration measure of each channel's top-k set.

    Args:
        labels_of_topk: ``(C, W)`` labels of the top-k images (``-1`` = missing slot).
        num_classes: number of classes of the dataset.
        multilabel: whether the labels are bitmasks.
        measure: ``"entropy"`` (normalised, the study's default) or ``"gini"``.

    Returns:
        ``(C,)`` float64, NaN for channels with no labelled image.
    """
    hist = class_histogram(labels_of_topk, num_classes, multilabel)
    if measure == "entropy":
        return normalized_entropy(hist)
    if measure == "gini":
        return gini(hist)
    raise ValueError(f"unknown measure {measure!r}; use 'entropy' or 'gini'")
