"""Intervals over images: a delete-one-group jackknife that streams, shards, merges and resumes like the metrics.

How it works
    Every image is put in one of ``G`` groups by a hash of its *global* sample index and the run's seed (a metric
    whose statistic is defined per batch, such as minibatch CKA, puts whole batches in groups instead: its
    :meth:`~ftprobe.Metric.resampling_unit` is ``"batch"``). Each metric instance is kept as ``G`` replicas, one per
    group, each fed only its group's images. The full value is the merge of all replicas, through the metric's
    declared reductions, so it is the value of a run without intervals (up to rounding). The replicate ``j`` is the
    value with group ``j`` left out: the merge of the other ``G − 1`` replicas, found for every ``j`` with
    ``O(G log G)`` merges and ``O(log G)`` states alive at once (:func:`leave_one_out`).

    The groups are a function of the global index, so a run sharded over ranks, merged from shards, or interrupted
    and resumed has the same groups, the same replicas after the merge, and the same intervals.

    The interval is the jackknife's ``θ̂ ± t(g−1) · se`` with ``se² = (g−1)/g · Σ (θ₍ⱼ₎ − θ̄)²`` over the ``g`` groups
    that received images, centred on the full estimate. It describes how the value would vary over another draw
    of as many images from the same distribution. ``bias`` is the jackknife's estimate of the estimator's own bias
    (``(g − 1)(θ̄ − θ̂)``): biased (default) CKA of wide layers on few images is biased upwards, which an interval
    does not cure; use ``debiased=True`` or more images when it is large. No image is ever used twice, so the
    debiased estimators stay unbiased (a bootstrap with replacement would duplicate images and bias them).

:func:`difference` compares two values of one run on the same images (layer A vs layer B, fine-tune 1 vs 2): their
replicates are paired by group, so the interval of the difference accounts for what the two share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .metric import Metric, resolve_reduce

__all__ = ["DEFAULT_GROUPS", "Resampling", "difference", "group_of", "jackknife_interval", "leave_one_out",
           "t_quantile"]

DEFAULT_GROUPS = 20
_MASK = 0x7FFFFFFF  # hash in 31 bits: every product below stays inside int64


@dataclass(frozen=True)
class Resampling:
    """How a run makes its intervals: ``groups`` image groups, the interval ``level``, the hash ``seed``."""

    groups: int = DEFAULT_GROUPS
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        from .errors import FtprobeError

        if not isinstance(self.groups, int) or self.groups < 2:
            raise FtprobeError(f"intervals need at least 2 groups of images, not {self.groups!r} (the default is "
                               f"{DEFAULT_GROUPS}; 10 to 50 are sensible)")
        if not 0 < self.level < 1:
            raise FtprobeError(f"the interval level must lie between 0 and 1 (0.95 for 95 %), not {self.level!r}")

    def record(self, units: dict[str, str], groups_used: int) -> dict[str, Any]:
        """The result's ``resampling`` record."""
        kinds = sorted(set(units.values()))
        return {"method": "jackknife", "groups": self.groups, "level": self.level, "seed": self.seed,
                "unit": kinds[0] if len(kinds) == 1 else "mixed", "units": dict(units), "groups_used": groups_used}


def group_of(index: Tensor, groups: int, seed: int = 0) -> Tensor:
    """The group of each global sample index: a seeded integer hash (a murmur-style finaliser in 31 bits), so the
    groups look random, are the same on every rank and every run, and do not follow the data's order."""
    x = (index.to(torch.int64) * 0x9E3779B1 + (seed * 0x85EBCA77 + 0x27D4EB2F)) & _MASK
    for mult in (0x2C1B3C6D, 0x297A2D39):
        x = ((x ^ (x >> 15)) * mult) & _MASK
    x = x ^ (x >> 16)
    return x % groups


def t_quantile(level: float, dof: int) -> float:
    """The two-sided Student t quantile ``t_{dof}((1 + level) / 2)``."""
    from scipy.stats import t

    return float(t.ppf((1.0 + level) / 2.0, dof))


def jackknife_interval(estimate: float, replicates: Sequence[float | None], level: float = 0.95
                       ) -> dict[str, Any]:
    """The delete-one-group jackknife interval of ``estimate`` from its leave-one-group-out ``replicates``
    (``None``: a group that received no image, left out of the count).

    Returns ``lo``, ``hi``, ``se`` and ``bias``, with a ``note`` (and NaN bounds) when it is undefined: fewer than two
    groups with images, or a replicate that is not finite.
    """
    used = [float(r) for r in replicates if r is not None]
    nan = float("nan")
    out: dict[str, Any] = {"lo": nan, "hi": nan, "se": nan, "bias": nan}
    if not math.isfinite(estimate):
        return {**out, "note": "the value itself is not finite"}
    if len(used) < 2:
        return {**out, "note": f"only {len(used)} group(s) of images received data; an interval needs 2 or more"}
    if not all(math.isfinite(r) for r in used):
        return {**out, "note": "the value is undefined with some group of images left out (too few images)"}
    g = len(used)
    mean = sum(used) / g
    se = math.sqrt((g - 1) / g * sum((r - mean) ** 2 for r in used))
    half = t_quantile(level, g - 1) * se
    return {"lo": estimate - half, "hi": estimate + half, "se": se, "bias": (g - 1) * (mean - estimate)}


def difference(a: Any, b: Any, key: str, level: float = 0.95, key_b: str | None = None) -> dict[str, Any] | None:
    """``a − b`` of two values of one run (:class:`ftprobe.Value`) with the interval of the difference: the
    jackknife over the paired replicates (the same groups of images left out of both).

    ``key_b`` is ``b``'s key when it differs from ``a``'s. Returns ``estimate``, ``lo``, ``hi``, ``se`` and
    ``within_noise`` (the interval covers 0), or None when either value has no interval for its key.
    """
    key_b = key_b or key
    ia, ib = a.intervals.get(key), b.intervals.get(key_b)
    if ia is None or ib is None:
        return None
    ra, rb = ia.get("replicates") or [], ib.get("replicates") or []
    if len(ra) != len(rb) or not ra:
        return None
    reps = [None if x is None or y is None else float(x) - float(y) for x, y in zip(ra, rb)]
    estimate = float(a.scalars[key]) - float(b.scalars[key_b])
    iv = jackknife_interval(estimate, reps, level)
    within = bool(iv["lo"] <= 0.0 <= iv["hi"]) if math.isfinite(iv["lo"]) else True
    return {"estimate": estimate, "lo": iv["lo"], "hi": iv["hi"], "se": iv["se"], "within_noise": within,
            **({"note": iv["note"]} if "note" in iv else {})}


# ----------------------------------------------------------------------------------------------------------------
# Leave-one-group-out states

State = dict[str, Any]


def merge_states(metric: Metric, a: State | None, b: State) -> State:
    """Two states of ``metric``'s kind merged with its declared reductions (``None`` is the empty state). The
    reductions must not modify their arguments (the built-in ones do not): the replicas are merged many times."""
    if a is None:
        return b
    return {name: resolve_reduce(metric.reduction(name))(a[name], b[name]) for name in metric.state_names}


def leave_one_out(replicas: Sequence[Sequence[State]], kinds: Sequence[Metric],
                  ) -> Iterator[tuple[int, list[State | None]]]:
    """For every group ``j``: the states with group ``j`` left out, for every metric at once.

    ``replicas[i][j]`` is metric ``i``'s state of group ``j``; ``kinds[i]`` gives its reductions. Divide and conquer:
    the left half's groups are merged into what the right half's leaves receive and the other way round, so each
    state is merged ``O(log G)`` times and only ``O(log G)`` merged states are alive at once.
    """
    n = len(replicas[0]) if replicas else 0

    def merged(acc: list[State | None], lo: int, hi: int) -> list[State | None]:
        out = list(acc)
        for i, reps in enumerate(replicas):
            for j in range(lo, hi):
                out[i] = merge_states(kinds[i], out[i], reps[j])
        return out

    def walk(lo: int, hi: int, acc: list[State | None]) -> Iterator[tuple[int, list[State | None]]]:
        if hi - lo == 1:
            yield lo, acc
            return
        mid = (lo + hi) // 2
        yield from walk(lo, mid, merged(acc, mid, hi))
        yield from walk(mid, hi, merged(acc, lo, mid))

    if n:
        yield from walk(0, n, [None] * len(replicas))


def headline_keys(declared: dict[str, Any] | None) -> Callable[[str], bool]:
    """Which scalar keys of a metric get intervals: its declared headline and interval keys (globs), or every
    scalar when it declares neither."""
    import fnmatch

    pats = [*((declared or {}).get("headline") or []), *((declared or {}).get("interval_keys") or [])]
    if not pats:
        return lambda key: True
    return lambda key: any(fnmatch.fnmatchcase(key, p) for p in pats)


class GroupCounts(Metric):
    """How many images and batches each group received: which groups a replicate is defined for. Kept with the
    metric states, so it is checkpointed, resumed and merged across ranks as they are."""

    name = "_groups"

    def __init__(self, groups: int = DEFAULT_GROUPS, seed: int = 0) -> None:
        super().__init__()
        self.groups, self.seed = groups, seed
        self.add_state("samples", torch.zeros(groups, dtype=torch.int64), reduce="sum")
        self.add_state("batches", torch.zeros(groups, dtype=torch.int64), reduce="sum")

    def update(self, step: Any) -> None:  # step: the batch's global sample indices
        index = step.to(self.samples.device)
        if index.numel() == 0:
            return
        self.samples += torch.bincount(group_of(index, self.groups, self.seed), minlength=self.groups)
        self.batches[group_of(index[:1], self.groups, self.seed)] += 1

    def compute(self) -> dict[str, Any]:
        return {"samples": self.samples.tolist(), "batches": self.batches.tolist()}

    def used(self, unit: str) -> list[bool]:
        counts = self.samples if unit == "sample" else self.batches
        return [bool(c > 0) for c in counts.tolist()]
