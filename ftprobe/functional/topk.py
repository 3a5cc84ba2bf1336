"""Per-channel top-k maximal-activation images, streamed and mergeable, and the overlap of two models' top-k sets.

The study (Gonthier et al. 2020, PAPER.md §3) ranks the images of a dataset by a channel score (the spatial mean
of the post-ReLU map) and keeps, per channel, the k best. Here the ranking is a **total order**: score descending,
then global sample index ascending. So the kept set and its order depend only on the data, never on batch order,
batch size or sharding, and merging shards gives exactly the sequential result.

Conventions:
    * scores ``(N, C)``: one row per image, one column per channel (the ``"gap"`` or ``"max"`` view).
    * kept values are **float64** (exact for float16/bfloat16/float32/float64 scores); indices and labels int64.
    * a missing slot (a channel with fewer than k eligible images) is ``value -inf, index -1, label -1``.
    * ``positive_only=True`` (the study's rule): only scores ``> 0`` are eligible. NaN and ``-inf`` scores are
      never eligible.
    * labels per image: ``(N,)`` class indices, or ``(N, K)`` multi-hot packed into an int64 bitmask
      (bit j = class j, at most 63 classes), or ``None`` (stored as -1).

Running state (:data:`TopKState`): ``{"values": [...], "index": [...], "labels": [...]}``, three lists of chunks.
A batch is appended as a raw chunk (values ``(C, N)``, index and labels ``(N,)`` shared by every channel); once the
chunks hold more than ``k + max(k, 128)`` columns they are compacted into one canonical ``(C, k)`` chunk. The
state always contains the exact top-k set, so compaction never changes a result; it only bounds memory and makes
the cost per batch O(N log k) instead of a sort of ``(C, k + N)`` every batch. With ``k="all"`` nothing is ever
dropped and nothing is sorted until :func:`finalize_topk`. All of this is shape arithmetic: no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ALL",
    "MAX_MULTILABEL_CLASSES",
    "TopK",
    "TopKState",
    "alive_channels",
    "empty_state",
    "finalize_topk",
    "kept_width",
    "merge_topk",
    "normalize_k",
    "pack_multihot",
    "running_topk_update",
    "state_width",
    "topk_overlap",
    "topk_prefix",
    "topk_as_state",
    "topk_set_sizes",
    "topk_sets",
    "unpack_bitmask",
]

ALL = "all"
MAX_MULTILABEL_CLASSES = 63  # bit 63 is the sign bit of int64; -1 must stay free to mean "no label"
_MIN_SLACK = 128
KSpec = int | str | Sequence[int | str]
TopKState = dict[str, list[Tensor]]


class TopK(NamedTuple):
    """Canonical per-channel top-k, sorted by (score descending, global index ascending).

    Attributes:
        values: ``(C, W)`` float64 scores; ``-inf`` in missing slots.
        index: ``(C, W)`` int64 global sample indices; ``-1`` in missing slots.
        labels: ``(C, W)`` int64 class index or multi-hot bitmask of each kept image; ``-1`` in missing slots.
    """

    values: Tensor
    index: Tensor
    labels: Tensor


def normalize_k(k: KSpec) -> tuple[int | str, ...]:
    """Validate ``k`` (an int, ``"all"``, a sequence of them, or a string like ``"100,1000,all"``) into a sorted
    tuple, ints first, ``"all"`` last.

    Raises:
        ValueError: ``k`` is empty, not positive, or neither an int nor ``"all"``.
    """
    if isinstance(k, str):  # "100", "all", or "100,1000,all" as typed on a command line
        items: list = [p.strip() for p in k.split(",")]
        items = [int(p) if p.isdigit() else p for p in items]
    elif isinstance(k, Sequence):
        items = list(k)
    else:
        items = [k]
    if not items:
        raise ValueError("k is empty; give an int, 'all', or a list of them, e.g. k=(100, 1000, 'all')")
    for item in items:
        ok_int = isinstance(item, int) and not isinstance(item, bool) and item >= 1
        if not ok_int and item != ALL:
            raise ValueError(f"k={item!r} is invalid; give a positive int or 'all', e.g. k=100 or k=(100, 'all')")
    ints = sorted({int(i) for i in items if i != ALL})
    return (*ints, *((ALL,) if ALL in items else ()))


def kept_width(k: KSpec) -> int | None:
    """How many images per channel the state keeps: ``max(k)``, or ``None`` (unbounded) when ``"all"`` is asked."""
    ks = normalize_k(k)
    return None if ks[-1] == ALL else int(ks[-1])


def empty_state() -> TopKState:
    """A running state that has seen no data."""
    return {"values": [], "index": [], "labels": []}


def state_width(state: TopKState) -> int:
    """Number of columns (candidate slots per channel) held by a running state."""
    return sum(int(v.shape[1]) for v in state["values"])


def pack_multihot(labels: Tensor) -> Tensor:
    """Pack multi-hot rows ``(N, K)`` (any dtype, non-zero = present, ``K <= 63``) into ``(N,)`` int64 bitmasks.

    Example:
        >>> pack_multihot(torch.tensor([[1, 0, 1], [0, 0, 0]])).tolist()
        [5, 0]
    """
    if labels.dim() != 2:
        raise ValueError(f"multi-hot labels must be (N, K), got shape {tuple(labels.shape)}")
    if labels.shape[1] > MAX_MULTILABEL_CLASSES:
        raise ValueError(f"at most {MAX_MULTILABEL_CLASSES} classes fit a bitmask, got {labels.shape[1]}")
    bits = torch.bitwise_left_shift(1, torch.arange(labels.shape[1], device=labels.device))
    return ((labels != 0).to(torch.int64) * bits).sum(dim=1)


def unpack_bitmask(bits: Tensor, num_classes: int) -> Tensor:
    """Unpack int64 bitmasks ``(...)`` into booleans ``(..., num_classes)``; a negative entry (missing) is all False."""
    shifts = torch.arange(num_classes, device=bits.device)
    return ((bits.unsqueeze(-1) >> shifts) & 1).bool() & (bits >= 0).unsqueeze(-1)


def _encode_labels(labels: Tensor | None, n: int, device: torch.device) -> Tensor:
    if labels is None:
        return torch.full((n,), -1, dtype=torch.int64, device=device)
    if labels.dim() == 2:
        labels = pack_multihot(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must be (N,) or (N, K) with N={n}, got shape {tuple(labels.shape)}")
    return labels.to(device=device, dtype=torch.int64)


def _eligible(scores: Tensor, positive_only: bool) -> Tensor:
    """``(N, C)`` scores → ``(C, N)`` float64 with ``-inf`` where an image may not enter."""
    v = scores.detach().t().to(torch.float64)
    keep = v > 0 if positive_only else (v > float("-inf"))  # NaN compares False in both cases
    return torch.where(keep, v, torch.full_like(v, float("-inf")))


def _canonical(values: Tensor, index: Tensor, labels: Tensor, width: int | None) -> TopK:
    """Sort candidates ``(C, M)`` (index/labels ``(M,)`` shared or ``(C, M)``) and keep ``width`` columns.

    With ``width=None`` ("all") trailing columns that are missing in every channel are dropped (a host sync; this
    runs once per compute or merge, never per batch).
    """
    if index.dim() == 1:  # every column is a raw sample: one 1-D sort puts the columns in index order
        perm = torch.sort(index, stable=True).indices
        values = values[:, perm]
        index = index[perm].expand_as(values)
        labels = labels[perm].expand_as(values)
    else:
        perm = torch.sort(index, dim=1, stable=True).indices
        values, index, labels = values.gather(1, perm), index.gather(1, perm), labels.gather(1, perm)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)  # ties keep ascending index order
    if width is not None:
        values, order = values[:, :width], order[:, :width]
    index, labels = index.gather(1, order), labels.gather(1, order)
    del order
    missing = values == float("-inf")
    index.masked_fill_(missing, -1)
    labels.masked_fill_(missing, -1)
    if width is None and values.shape[1]:
        keep = int((~missing).sum(dim=1).max())
        values, index, labels = values[:, :keep], index[:, :keep], labels[:, :keep]
    return TopK(values.contiguous(), index.contiguous(), labels.contiguous())


def _concat(state: TopKState) -> tuple[Tensor, Tensor, Tensor]:
    chunks = list(zip(state["values"], state["index"], state["labels"]))
    if all(i.dim() == 1 for _, i, _ in chunks):
        return tuple(torch.cat(list(parts), dim=-1) for parts in zip(*chunks))  # type: ignore[return-value]
    vals = [v for v, _, _ in chunks]
    idx = [i.expand_as(v) for v, i, _ in chunks]
    lab = [lb.expand_as(v) for v, _, lb in chunks]
    return torch.cat(vals, dim=1), torch.cat(idx, dim=1), torch.cat(lab, dim=1)


def topk_as_state(t: TopK) -> TopKState:
    """A running state holding one canonical :class:`TopK` (shares its tensors)."""
    return {"values": [t.values], "index": [t.index], "labels": [t.labels]}


def _check_channels(a: TopKState, b: TopKState) -> None:
    channels = {int(s["values"][0].shape[0]) for s in (a, b) if s["values"]}  # chunks of one state agree
    if len(channels) > 1:
        raise ValueError(f"top-k states with different channel counts {sorted(channels)} cannot be merged")


def running_topk_update(
    state: TopKState,
    scores: Tensor,
    index: Tensor,
    labels: Tensor | None,
    k: KSpec,
    positive_only: bool = True,
) -> TopKState:
    """Fold one batch into a running top-k state and return the new state (the old one is not modified).

    Args:
        state: the running state (:func:`empty_state` at first).
        scores: ``(N, C)`` channel scores of the batch.
        index: ``(N,)`` int64 global sample indices (unique across the whole dataset).
        labels: ``(N,)`` class indices, ``(N, K)`` multi-hot, or ``None``.
        k: the k (or ks) to serve; ``max(k)`` images per channel are kept, all of them with ``"all"``.
        positive_only: keep only scores ``> 0`` (the study's rule).

    Returns:
        The new state. No ``.item()`` and no host sync: shapes alone decide when to compact.
    """
    if scores.dim() != 2 or index.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, C) and index (N,), got {tuple(scores.shape)} and {tuple(index.shape)}")
    width = kept_width(k)
    chunk = {
        "values": [_eligible(scores, positive_only)],
        "index": [index.to(device=scores.device, dtype=torch.int64)],
        "labels": [_encode_labels(labels, scores.shape[0], scores.device)],
    }
    _check_channels(state, chunk)
    new = {name: [*state[name], *chunk[name]] for name in ("values", "index", "labels")}
    if width is not None and state_width(new) > width + max(width, _MIN_SLACK):
        new = topk_as_state(_canonical(*_concat(new), width=width))
    return new


def merge_topk(a: TopKState, b: TopKState, k: KSpec) -> TopKState:
    """Merge two running states (two shards, or two halves of a run) into one canonical chunk.

    Concatenates the candidates and re-takes the top-k with the same total order, so any grouping and any order
    of shards gives exactly the sequential state after :func:`finalize_topk`. This is the state's declared
    reduction.
    """
    _check_channels(a, b)
    both = {name: [*a[name], *b[name]] for name in ("values", "index", "labels")}
    if not both["values"]:
        return empty_state()
    return topk_as_state(_canonical(*_concat(both), width=kept_width(k)))


def finalize_topk(state: TopKState, k: KSpec) -> TopK:
    """The canonical top-k of a running state: ``(C, min(max(k), seen))`` columns, or for ``"all"`` as many
    columns as the channel with the most eligible images has. An empty state gives ``(0, 0)`` tensors."""
    if not state["values"]:
        empty_f = torch.zeros(0, 0, dtype=torch.float64)
        empty_i = torch.zeros(0, 0, dtype=torch.int64)
        return TopK(empty_f, empty_i, empty_i.clone())
    width = kept_width(k)
    if len(state["values"]) == 1 and state["index"][0].dim() == 2:  # one compacted chunk is canonical already
        t = TopK(state["values"][0], state["index"][0], state["labels"][0])
        return t if width is None else topk_prefix(t, width)
    return _canonical(*_concat(state), width=width)


def topk_sets(
    scores: Tensor, index: Tensor, k: KSpec = 100, positive_only: bool = True, labels: Tensor | None = None
) -> TopK:
    """One-shot top-k of every channel over all the data at once (the reference for the streaming state).

    Args:
        scores: ``(N, C)`` channel scores.
        index: ``(N,)`` global sample indices.
        k: int, ``"all"`` or several; ``max(k)`` columns are returned (take prefixes for smaller k).
        positive_only: keep only scores ``> 0``.
        labels: ``(N,)`` class indices, ``(N, K)`` multi-hot, or ``None``.

    Returns:
        :class:`TopK` with ``(C, W)`` tensors.

    Example:
        >>> s = torch.tensor([[0.5, 0.0], [0.9, 0.2], [0.5, 0.0]])
        >>> topk_sets(s, torch.tensor([7, 3, 2]), k=2).index.tolist()
        [[3, 2], [3, -1]]
    """
    if scores.dim() != 2 or index.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, C) and index (N,), got {tuple(scores.shape)} and {tuple(index.shape)}")
    values = _eligible(scores, positive_only)
    idx = index.to(device=scores.device, dtype=torch.int64)
    lab = _encode_labels(labels, scores.shape[0], scores.device)
    return _canonical(values, idx, lab, width=kept_width(k))


def topk_prefix(t: TopK, k: int | str) -> TopK:
    """The top-``k`` of a canonical :class:`TopK` (its first ``k`` columns); ``"all"`` returns it unchanged."""
    if k == ALL:
        return t
    return TopK(t.values[:, :k], t.index[:, :k], t.labels[:, :k])


def alive_channels(t: TopK) -> Tensor:
    """``(C,)`` bool: channels with at least one eligible image (a dead channel has none)."""
    if t.index.shape[1] == 0:
        return torch.zeros(t.index.shape[0], dtype=torch.bool, device=t.index.device)
    return t.index[:, 0] >= 0


def topk_set_sizes(idx: Tensor, k: int | str) -> Tensor:
    """``(C,)`` int64: how many images each channel's top-``k`` set really holds (``min(k, eligible images)``).

    Args:
        idx: ``(C, W)`` canonical top-k indices (``-1`` = missing slot).
        k: the k, or ``"all"``.
    """
    if k != ALL:
        idx = idx[:, :k]
    return (idx >= 0).sum(dim=1)


def topk_overlap(idx_a: Tensor, idx_b: Tensor, k: int | str) -> Tensor:
    """Per-channel overlap of two models' top-k sets, in percent (PAPER.md §3).

    ``overlap_c = |Top_k^a(c) ∩ Top_k^b(c)| / max(|Top_k^a(c)|, |Top_k^b(c)|) × 100``, where ``Top_k(c)`` holds at
    most k images (the eligible ones, when a channel has fewer than k). Whenever either model has k eligible images
    for the channel the denominator is k, the study's ``|∩| / k``; only when both sets are shorter than k (fewer
    positive images than k, or fewer images in the data than k) is it the larger set's real size: the study's rule
    for ``k="all"`` ("divide by the larger set"), which a top-k set of fewer than k images is. So a set against
    itself gives 100 at every k. A channel with no eligible image in either model has no overlap to measure: NaN
    (left out of the distribution by :func:`ftprobe.metrics._topk_base.summarize`, and counted by the metric).

    Args:
        idx_a: ``(C, Wa)`` canonical top-k indices of one model (``-1`` = missing); the first ``k`` columns are used.
        idx_b: ``(C, Wb)`` the same for the other model.
        k: the k to evaluate, or ``"all"``.

    Returns:
        ``(C,)`` float64 overlaps in ``[0, 100]``, NaN where neither set holds an image.

    Example:
        >>> a = torch.tensor([[4, 2, 9], [1, -1, -1], [5, 6, -1]])
        >>> b = torch.tensor([[2, 4, 5], [3, -1, -1], [6, 5, -1]])
        >>> topk_overlap(a, b, 2).tolist()
        [100.0, 0.0, 100.0]
        >>> topk_overlap(a, b, 3).tolist()  # channel 2: both sets hold 2 images, the same two
        [66.66666666666666, 0.0, 100.0]
    """
    if idx_a.dim() != 2 or idx_b.dim() != 2 or idx_a.shape[0] != idx_b.shape[0]:
        raise ValueError(f"index sets must be (C, W) with the same C, got {tuple(idx_a.shape)}, {tuple(idx_b.shape)}")
    if k != ALL:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int or 'all', got {k!r}")
        idx_a, idx_b = idx_a[:, :k], idx_b[:, :k]
    s = torch.sort(torch.cat([idx_a, idx_b], dim=1), dim=1).values
    common = ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).sum(dim=1).to(torch.float64)
    denom = torch.maximum(topk_set_sizes(idx_a, ALL), topk_set_sizes(idx_b, ALL)).to(torch.float64)
    return common / denom * 100.0  # 0 / 0 = NaN where neither set holds an image, on purpose
