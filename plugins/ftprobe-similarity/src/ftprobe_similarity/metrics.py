"""The four metrics, thin stateful classes over :mod:`ftprobe_similarity.functional` (ftprobe plugin API 1).

SVCCA, PWCCA and Procrustes stream exact float64 moments of each layer's features (O(C²) memory, no features kept)
and share that state when several of them run (the same ``state_key``). Mutual k-NN keeps a bounded sample: the
first ``max_samples`` samples by global index, whatever the batch order or sharding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable
from typing import Any

import torch
from ftprobe import Metric, Need, PairStep, RunContext, Scope
from ftprobe.core.errors import MetricNeedsError
from torch import Tensor

from .functional import (
    RANK_TOL,
    merge_moments,
    moments,
    mutual_knn,
    procrustes_from_moments,
    pwcca_from_moments,
    svcca_from_moments,
)

__all__ = ["PWCCA", "SVCCA", "MutualKNN", "Procrustes"]

_FEATURES = ("gap", "max", "flatten")
_NAN = float("nan")


def _width(shape: tuple[int, ...], features: str) -> int:
    """Features per sample of a layer output ``shape`` (no batch axis), by ftprobe's views rule."""
    if features == "flatten":
        return math.prod(shape) if shape else 1
    return int(shape[-1]) if len(shape) == 2 else int(shape[0]) if shape else 1


def _check_memory(name: str, need: float, limit: float, what: str, fix: str) -> str:
    text = f"{what}: about {need / 1e6:.3g} MB per model pair"
    if need / 1e9 > limit:
        raise MetricNeedsError(f"{name}: {text}, over max_memory_gb={limit:g}. Fix: {fix}, or raise max_memory_gb.")
    return text


def _constant(c: Tensor, mean: Tensor, n: int) -> bool:
    """Whether features with centred moments ``c`` and ``mean`` are constant up to rounding (std ≤ 1e-10 × |mean|)."""
    scale = float(mean.abs().max()) if mean.numel() else 0.0
    return float(c.trace()) <= n * c.shape[0] * (1e-10 * scale) ** 2


def _features(step: PairStep, view: str) -> tuple[Tensor, Tensor]:
    x, y = step.base.view(view), step.tuned.view(view)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"view {view!r} must be (N, C) for both models, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


class _MomentMetric(Metric):
    """Shared part of SVCCA, PWCCA and Procrustes: options, the streamed moments, the memory check."""

    needs = Need.ACTIVATIONS
    scope = Scope.PAIR
    layerwise = True
    pairs_units = False  # compares two sets of features of any widths: runs on models of different architectures

    def __init__(self, features: str = "gap", max_memory_gb: float = 4.0) -> None:
        super().__init__()
        if features not in _FEATURES:
            raise MetricNeedsError(f"{self.name}: features={features!r} is not an option; use one of {_FEATURES}")
        if not (isinstance(max_memory_gb, (int, float)) and max_memory_gb > 0):
            raise MetricNeedsError(f"{self.name}: max_memory_gb must be a positive number, got {max_memory_gb!r}")
        self.features, self.max_memory_gb = features, max_memory_gb
        self.add_state("moments", {}, reduce=merge_moments)

    def views(self) -> frozenset[str]:
        return frozenset({self.features})

    def state_key(self) -> Hashable:
        return ("ftprobe_similarity.moments", self.features)

    def setup(self, ctx: RunContext) -> list[str]:
        widths = [_width(tuple(s), self.features) for s in ctx.shapes.values()]
        need = sum(8 * 4 * c * c for c in widths)  # Cxx, Cyy, Cxy and the batch's (2C)² product, float64
        fix = "use features='gap' (one value per channel)" if self.features == "flatten" else "select fewer layers"
        return [_check_memory(self.name, need, self.max_memory_gb, "streamed float64 moments", fix)]

    def update(self, step: PairStep) -> None:
        x, y = _features(step, self.features)
        if x.shape[0]:
            self.moments = merge_moments(self.moments, moments(x, y))

    def _ready(self) -> tuple[int, str]:
        """The sample count and, when the value cannot be computed, why."""
        n = int(self.moments["n"]) if self.moments else 0
        if n < 2:
            return n, f"needs at least 2 samples, saw {n}"
        m = self.moments
        dead = [side for side, c, mean in (("base", m["cxx"], m["mean_x"]), ("tuned", m["cyy"], m["mean_y"]))
                if _constant(c, mean, n)]
        if dead:
            return n, f"the {' and '.join(dead)} features are constant over the samples: nothing to correlate"
        return n, ""


_FEATURES_HELP = "the activation view: 'gap' (spatial mean, default), 'max' or 'flatten'"
_MEMORY_HELP = "refuse a run whose streamed moments are estimated above this many GB (default 4)"


class SVCCA(_MomentMetric):
    """SVCCA: mean canonical correlation after keeping 99% of each side's variance (Raghu et al. 2017).

    Per side, the fewest principal directions of the centred features whose variances sum to ``keep`` of the total;
    then CCA between the two reduced representations; the value is the mean canonical correlation (1 for identical
    representations, invariant to rotations and scaling of either). Exact from streamed float64 moments.

    ``compute()``: ``svcca``, ``correlations`` ``(min(dims_base, dims_tuned),)``, ``dims_base``, ``dims_tuned``,
    ``n``, and ``note`` when the value is NaN or when ``dims_base + dims_tuned > n − 1`` (some correlations are then 1
    by construction: use more samples).

    Args:
        keep: the share of variance kept per side (0 < keep ≤ 1).
        features: the activation view: ``"gap"`` (spatial mean, default), ``"max"`` or ``"flatten"``.
        max_memory_gb: ``setup`` refuses a plan whose moments would need more.
    """

    name = "svcca"
    higher_is_more_similar = True
    identity = {"svcca": 1.0}
    title = "SVCCA (mean canonical correlation)"
    description = "Mean canonical correlation after keeping 99% of each side's variance; 1 = same representation"
    headline = ("svcca",)
    value_names = {"svcca": "SVCCA"}
    option_help = {
        "keep": "the share of variance kept per side, 0 < keep <= 1 (default 0.99)",
        "features": _FEATURES_HELP,
        "max_memory_gb": _MEMORY_HELP,
    }
    figure_files = ("svcca_correlations.png",)

    @classmethod
    def figures(cls, values: Any) -> Any:
        """The canonical correlations of each layer, sorted, one panel per pair (beside the report's SVCCA
        values, which are their means): where the spectrum drops shows how many directions the models share."""
        from matplotlib.figure import Figure

        pairs = values.pairs()
        curves = {pair: [(n, d[n].arrays["correlations"]) for n in values.layers()
                         if n in d and isinstance(d[n].arrays.get("correlations"), list)] for pair, d in pairs.items()}
        curves = {pair: c for pair, c in curves.items() if c}
        if not curves:
            return None
        fig = Figure(figsize=(min(10.6, 3.5 * len(curves) + 1.0), 3.4), layout="constrained")
        axes = fig.subplots(1, len(curves), squeeze=False, sharey=True)[0]
        for ax, ((base, tuned), layer_curves) in zip(axes, curves.items()):
            for layer, corr in layer_curves:
                ys = sorted((float(c) for c in corr if c is not None), reverse=True)
                ax.plot(range(1, len(ys) + 1), ys, "o-", ms=3, label=values.label(layer))
            ax.set_title(f"{base} → {tuned}", fontsize=10)
            ax.set_xlabel("canonical direction (sorted)")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("canonical correlation")
        fig.suptitle("SVCCA: canonical correlations per layer")
        return [values.save(fig, "svcca_correlations", "SVCCA canonical correlations",
                            "Sorted canonical correlations of each layer; their mean is the SVCCA value.")]

    def __init__(self, keep: float = 0.99, features: str = "gap", max_memory_gb: float = 4.0) -> None:
        super().__init__(features, max_memory_gb)
        if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
            raise MetricNeedsError(f"svcca: keep must be in (0, 1] (0.99 keeps 99% of the variance), got {keep!r}")
        self.keep = keep

    def compute(self) -> dict[str, Any]:
        n, why = self._ready()
        if why:
            return {"svcca": _NAN, "n": n, "note": f"NaN: {why}"}
        out: dict[str, Any] = {**svcca_from_moments(self.moments, self.keep), "n": n}
        if out["dims_base"] + out["dims_tuned"] > n - 1:
            out["note"] = (f"dims_base + dims_tuned = {out['dims_base'] + out['dims_tuned']} > n - 1 = {n - 1}: some "
                           "canonical correlations are 1 by construction; use more samples")
        return out


class PWCCA(_MomentMetric):
    """PWCCA: canonical correlations weighted by how much of the representation each accounts for (Morcos et al. 2018).

    CCA on every direction with variance, then ``Σ α_i ρ_i`` with ``α_i ∝ Σ_j |⟨h_i, x̃_j⟩|`` (``h_i`` the unit-norm
    canonical variates, ``x̃_j`` the centred neurons) of the lower-rank side, the base on a tie (the authors' code
    choice). 1 for identical representations. Exact from streamed float64 moments.

    ``compute()``: ``pwcca``, ``correlations``, ``weights``, ``weights_from`` (``"base"`` or ``"tuned"``),
    ``rank_base``, ``rank_tuned``, ``n``, and ``note`` when NaN or when ``rank_base + rank_tuned > n − 1`` (then
    some correlations are 1 by construction and their weights, hence the value, are not unique: use more samples).

    Args:
        rank_tol: directions whose variance is below ``rank_tol`` × the largest count as empty (rank detection).
        features, max_memory_gb: as :class:`SVCCA`.
    """

    name = "pwcca"
    higher_is_more_similar = True
    identity = {"pwcca": 1.0}
    title = "PWCCA (projection-weighted CCA)"
    description = "Canonical correlations weighted by how much of the representation each accounts for; 1 = same"
    headline = ("pwcca",)
    value_names = {"pwcca": "PWCCA"}
    option_help = {
        "rank_tol": "directions with variance below rank_tol x the largest count as empty (rank detection)",
        "features": _FEATURES_HELP,
        "max_memory_gb": _MEMORY_HELP,
    }

    def __init__(self, rank_tol: float = RANK_TOL, features: str = "gap", max_memory_gb: float = 4.0) -> None:
        super().__init__(features, max_memory_gb)
        if not (isinstance(rank_tol, (int, float)) and 0 < rank_tol < 1):
            raise MetricNeedsError(f"pwcca: rank_tol must be in (0, 1) (default {RANK_TOL}), got {rank_tol!r}")
        self.rank_tol = rank_tol

    def compute(self) -> dict[str, Any]:
        n, why = self._ready()
        if why:
            return {"pwcca": _NAN, "n": n, "note": f"NaN: {why}"}
        out: dict[str, Any] = {**pwcca_from_moments(self.moments, self.rank_tol), "n": n}
        if out["rank_base"] + out["rank_tuned"] > n - 1:
            out["note"] = (f"rank_base + rank_tuned = {out['rank_base'] + out['rank_tuned']} > n - 1 = {n - 1}: some "
                           "canonical correlations are 1 by construction and their weights are not unique; use more "
                           "samples")
        return out


class Procrustes(_MomentMetric):
    """Orthogonal Procrustes distance of centred, unit-Frobenius-norm features (Ding et al. 2021); 0 = identical.

    ``min_R ‖X̂ − ŶR‖²_F = 2 − 2‖X̂ᵀŶ‖_*`` over orthogonal R, with X̂, Ŷ the centred features scaled to Frobenius
    norm 1 (in [0, 2]; invariant to rotations, isotropic scaling and translations). Exact from streamed float64
    moments. ``compute()``: ``procrustes``, ``n`` (and ``note`` when NaN).

    Args:
        features, max_memory_gb: as :class:`SVCCA`.
    """

    name = "procrustes"
    higher_is_more_similar = False
    identity = {"procrustes": 0.0}
    title = "Orthogonal Procrustes distance"
    description = "Procrustes distance of centred, unit-norm features, in [0, 2]; 0 = same up to rotation"
    headline = ("procrustes",)
    value_names = {"procrustes": "Procrustes distance"}
    option_help = {"features": _FEATURES_HELP, "max_memory_gb": _MEMORY_HELP}

    def compute(self) -> dict[str, Any]:
        n, why = self._ready()
        if why:
            return {"procrustes": _NAN, "n": n, "note": f"NaN: {why}"}
        return {"procrustes": procrustes_from_moments(self.moments), "n": n}


def _keep_first(a: dict[str, Tensor], b: dict[str, Tensor], limit: int) -> dict[str, Tensor]:
    """The ``limit`` samples of two kept sets with the smallest global indices, in index order."""
    if not a and not b:
        return {}
    parts = [p for p in (a, b) if p]
    joined = {key: torch.cat([p[key] for p in parts]) for key in ("index", "x", "y")}
    order = torch.argsort(joined["index"], stable=True)[:limit]
    return {key: value[order] for key, value in joined.items()}


class MutualKNN(Metric):
    """Mutual k-NN: mean share of each sample's k nearest neighbours common to both models (Huh et al. 2024).

    Neighbours by cosine similarity of L2-normalised features (the sample itself excluded, ties to the lower global
    index), k = 10 by default; 1 for identical representations. Neighbourhoods need all samples at once, so the
    metric keeps a bounded sample: the first ``max_samples`` samples by global index (float32 features, or float64
    when the activations are). ``compute()``: ``mutual_knn``, ``n`` (samples used), ``samples_seen``,
    ``max_samples`` and a ``note`` when samples were left out or the value is NaN.

    Args:
        k: neighbours per sample (1 ≤ k < the samples used).
        max_samples: the most samples kept (the bound on memory: ``max_samples × (C_base + C_tuned)`` values).
        features: the activation view: ``"gap"`` (default), ``"max"`` or ``"flatten"``.
    """

    name = "mutual_knn"
    identity = {"mutual_knn": 1.0}
    needs = Need.ACTIVATIONS
    scope = Scope.PAIR
    layerwise = True
    pairs_units = False  # compares two sets of features of any widths: runs on models of different architectures
    higher_is_more_similar = True
    title = "Mutual k-nearest-neighbour alignment"
    description = "Mean share of each sample's k nearest neighbours common to both models; 1 = same neighbourhoods"
    headline = ("mutual_knn",)
    value_names = {"mutual_knn": "mutual k-NN alignment"}
    option_help = {
        "k": "neighbours per sample, 1 <= k < the samples used (default 10)",
        "max_samples": "the most samples kept, by global index (bounds memory; default 2048)",
        "features": _FEATURES_HELP,
    }

    def __init__(self, k: int = 10, max_samples: int = 2048, features: str = "gap") -> None:
        super().__init__()
        if features not in _FEATURES:
            raise MetricNeedsError(f"mutual_knn: features={features!r} is not an option; use one of {_FEATURES}")
        for opt, value, low in (("k", k, 1), ("max_samples", max_samples, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise MetricNeedsError(f"mutual_knn: {opt} must be an integer ≥ {low}, got {value!r}")
        if k >= max_samples:
            raise MetricNeedsError(f"mutual_knn: k={k} needs max_samples > k (got {max_samples}); raise max_samples")
        self.k, self.max_samples, self.features = k, max_samples, features
        self.add_state("kept", {}, reduce=functools.partial(_keep_first, limit=max_samples))
        self.add_state("seen", torch.zeros((), dtype=torch.int64), reduce="sum")

    def views(self) -> frozenset[str]:
        return frozenset({self.features})

    def setup(self, ctx: RunContext) -> list[str]:
        n = self.max_samples if ctx.num_samples is None else min(self.max_samples, ctx.num_samples)
        if ctx.num_samples is not None and ctx.num_samples <= self.k:
            raise MetricNeedsError(f"mutual_knn: k={self.k} needs more than k samples, the data has "
                                   f"{ctx.num_samples}; lower k (-o mutual_knn.k=3) or use more images")
        widths = sum(2 * _width(tuple(s), self.features) for s in ctx.shapes.values())
        return [f"keeps the first {n} samples by index: about {4 * n * widths / 1e6:.3g} MB per model pair"]

    def update(self, step: PairStep) -> None:
        x, y = _features(step, self.features)
        if not x.shape[0]:
            return
        self.seen = self.seen + x.shape[0]
        kept = self.kept
        full = bool(kept) and kept["index"].shape[0] >= self.max_samples
        if full and step.index.device.type == "cpu" and bool(step.index.min() > kept["index"][-1]):
            return  # every sample of this batch comes after the kept ones (a cheap test on CPU only: no sync)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        batch = {"index": step.index.to(torch.int64), "x": x.to(dtype, copy=True), "y": y.to(dtype, copy=True)}
        self.kept = _keep_first(kept, batch, self.max_samples)

    def compute(self) -> dict[str, Any]:
        used = int(self.kept["index"].shape[0]) if self.kept else 0
        seen = int(self.seen)
        out: dict[str, Any] = {"mutual_knn": _NAN, "n": used, "samples_seen": seen, "max_samples": self.max_samples}
        if used <= self.k:
            out["note"] = f"NaN: k={self.k} needs more than k samples, saw {used}"
            return out
        out["mutual_knn"] = mutual_knn(self.kept["x"], self.kept["y"], self.k)
        if seen > used:
            out["note"] = (f"computed on the first {used} of {seen} samples (by global index); raise max_samples "
                           "to use more")
        return out
