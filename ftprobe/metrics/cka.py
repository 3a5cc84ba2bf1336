"""The ``cka`` metric: centred kernel alignment between the base and the tuned activations, per layer and across
layers, streamed over the data (a thin stateful wrapper over :mod:`ftprobe.functional.cka`)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.metric import Activation, Metric, Need, OptionHelp, PairStep, RunContext, Scope
from ftprobe.functional._cka_grams import _CHUNK_ELEMENTS, _feature_form_is_cheaper
from ftprobe.functional.cka import (
    _is_constant,
    _kernel_cka_compute,
    _linear_cka_compute,
    _linear_cka_matrix_compute,
    _linear_cka_merge,
    _linear_cka_update,
    _minibatch_cka_compute,
    _minibatch_cka_update,
)

__all__ = ["CKA"]

_CHOICES = {"features": ("gap", "flatten"), "estimator": ("exact", "minibatch"), "kernel": ("linear", "rbf")}
_TUNED = ".tuned."  # state key prefix of a tuned layer when the layers are not paired (no module path starts with .)


class CKA(Metric):
    """Centred kernel alignment (CKA) of base and tuned activations, per layer and optionally across layers.

    Kornblith et al. 2019 (exact linear / RBF / debiased CKA), Nguyen et al. 2021 (minibatch CKA). The study's
    default (PAPER.md): exact linear CKA on spatially averaged features over all images. Features come from the
    ``"gap"`` view (conv maps ``(N, C, H, W)`` → ``(N, C)``; token outputs ``(N, T, D)`` → mean over tokens
    ``(N, D)``; vectors ``(N, D)`` as they are) or the ``"flatten"`` view (every unit: ``(N, C·H·W)``, ``(N, T·D)``,
    ``(N, D)``).

    Estimators, and the state each keeps (all arithmetic in float64, nothing clamped):

    - exact, linear, not debiased, ``"gap"``: streamed centred moments merged with Chan's update; memory O(C²)
      per layer (O((ΣC)²) with ``cross=True``), no features kept.
    - exact with ``"flatten"``, ``kernel="rbf"`` or ``debiased=True``: keeps every sample's features (float32, or
      float64 when the activations are float64) and forms float64 Gram matrices at ``compute``; ``setup`` checks
      the memory against ``max_memory_gb``.
    - ``"minibatch"``: per batch, the unbiased HSIC_1 of every layer pair, weighted by the batch size; batches of
      fewer than 4 samples are skipped, counted and reported.

    Args:
        features: ``"gap"`` or ``"flatten"``.
        estimator: ``"exact"`` or ``"minibatch"``.
        kernel: ``"linear"`` or ``"rbf"`` (exact only; bandwidth ``rbf_threshold`` × median distance).
        rbf_threshold: the RBF bandwidth as a fraction of the median pairwise distance.
        debiased: unbiased HSIC in the exact estimator (Kornblith's debiased CKA).
        cross: also return the matrix of base layer i × tuned layer j (``"*"`` → ``"cka_cross"``). ``None``
            (default): on when the two models' layers differ (another architecture, or other layers), else off.
        max_memory_gb: refuse (in ``setup``) a plan whose estimated memory exceeds this.

    Too few samples: with 2 samples the centred features are x and −x (one direction), so biased CKA (linear or
    RBF) is 1 for any two models; with 1 it is 0 / 0. Debiased CKA divides by n − 3. So below 3 samples (4 for
    ``debiased=True``; minibatch: 4 per batch) a layer's value is NaN with a ``note``, and ``setup`` says so
    beforehand when the data's size is known.

    ``compute()`` returns ``{layer: {"cka", "n"[, "cka_shuffled", "note"]}, "*": {estimator, features, kernel, hsic,
    dtype, layers[, tuned_layers, cka_cross] ...}}``. ``cka_shuffled`` (the default estimator) is the expected CKA
    when the images of the two models are paired at random: this estimator's chance level on these images.

    Models of different architectures: layers of different widths are compared as they are (CKA needs the same
    samples, not the same units). Two layer lists of equal length are paired (layer i with layer i, per-layer
    values under the base's names); lists of other lengths are not, and then only ``cka_cross`` (base layers ×
    ``tuned_layers``, the tuned model's own names) is returned.

    Example:
        >>> from ftprobe.core.metric import Activation, PairStep
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 8, generator=g)
        >>> metric = CKA()
        >>> for part in x.split(16):
        ...     metric.update(PairStep(None, {"l": Activation("l", {"gap": part})},
        ...                            {"l": Activation("l", {"gap": 2 * part + 1})}, torch.arange(len(part))))
        >>> round(metric.compute()["l"]["cka"].item(), 12)
        1.0
    """

    name = "cka"
    needs = Need.ACTIVATIONS
    scope = Scope.PAIR
    layerwise = False
    pairs_units = False  # compares whole representations: any widths, any two architectures
    higher_is_more_similar = True
    identity = {"cka": 1.0}  # identical models, every estimator (NaN with a note when there are too few samples)
    title = "CKA (feature space)"
    description = "Centred kernel alignment of the two models' features per layer (1 = same up to rotation)"
    headline = ("cka",)
    interval_keys = ("cka_shuffled",)
    value_names = {"cka": "CKA"}
    option_help = {
        "features": OptionHelp("CKA features: 'gap' (spatial mean, default) or 'flatten'", flag="cka-features"),
        "estimator": OptionHelp("'exact' (default) or 'minibatch' (unbiased HSIC per batch)", flag="cka-estimator"),
        "kernel": "'linear' (default) or 'rbf' (exact estimator only)",
        "rbf_threshold": "RBF bandwidth as a fraction of the median pairwise distance (default 0.5)",
        "debiased": "unbiased HSIC in the exact estimator (Kornblith's debiased CKA)",
        "cross": OptionHelp("also compute the cross-layer matrix (base layer i x tuned layer j)", flag="cka-cross"),
        "max_memory_gb": "refuse a run whose CKA state is estimated above this (default 4)",
    }
    figure_files = ("cka_per_layer.png", "cka_cross_pair*.png")

    @classmethod
    def figures(cls, values: Any) -> Any:
        """CKA per layer (a line per pair) and the cross-layer heatmap of each pair that has one."""
        from .figures import cka_cross, cka_per_layer

        return cka_per_layer(values.result, values.out, values.metric) + cka_cross(values.result, values.out,
                                                                                   values.metric)

    def __init__(
        self,
        features: str = "gap",
        estimator: str = "exact",
        kernel: str = "linear",
        rbf_threshold: float = 0.5,
        debiased: bool = False,
        cross: bool | None = None,
        max_memory_gb: float = 4.0,
    ) -> None:
        super().__init__()
        self.features, self.estimator, self.kernel = features, estimator, kernel
        self.rbf_threshold, self.debiased, self.cross = rbf_threshold, debiased, cross
        self.max_memory_gb = max_memory_gb
        self._tuned_names: list[str] | None = None  # the tuned model's own names of paired layers, when they differ
        self._check_options()
        if self.path == "moments":  # {"widths": {layer: (2,)}, "stats": {layer or "*": Moments}}
            self.add_state("moments", {}, reduce=_merge_moments)
        elif self.path == "minibatch":  # {"widths": {layer: (2,)}, "sum": (2L, 2L) Σ n_i HSIC_1}
            self.add_state("hsic", {}, reduce=_merge_hsic)
            # samples used, batches used, samples skipped, batches skipped
            self.add_state("counts", torch.zeros(4, dtype=torch.int64), reduce="sum")
        else:  # {layer: {"x": [chunks (n, P)], "y": [chunks (n, Q)]}}: concatenation, joined once at compute
            self.add_state("kept", {}, reduce=_merge_kept)

    # -- options --------------------------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The state these options accumulate: ``"moments"``, ``"minibatch"`` (HSIC sums) or ``"kept"`` features."""
        if self.estimator == "minibatch":
            return "minibatch"
        plain = self.features == "gap" and self.kernel == "linear" and not self.debiased
        return "moments" if plain else "kept"

    def _check_options(self) -> None:
        for opt, allowed in _CHOICES.items():
            if getattr(self, opt) not in allowed:
                raise MetricNeedsError(f"cka: {opt}={getattr(self, opt)!r} is not an option; use one of {allowed}")
        if self.estimator == "minibatch" and self.kernel != "linear":
            raise MetricNeedsError("cka: kernel='rbf' needs estimator='exact' (per-batch RBF bandwidths differ, so "
                                   "minibatch RBF CKA is ill-defined); use estimator='exact' or kernel='linear'")
        if self.estimator == "minibatch" and self.debiased:
            raise MetricNeedsError("cka: estimator='minibatch' already uses the unbiased HSIC; drop debiased=True "
                                   "(or use estimator='exact' for Kornblith's debiased CKA)")
        for opt in ("rbf_threshold", "max_memory_gb"):
            value = getattr(self, opt)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise MetricNeedsError(f"cka: {opt} must be a positive number, got {value!r}")

    def views(self) -> frozenset[str]:
        return frozenset({self.features})

    def state_key(self) -> Hashable | None:
        # Instances that would accumulate identical state share it (e.g. kernel="rbf" and debiased=True both keep
        # the same features; minibatch state does not depend on `cross`).
        return ("ftprobe.cka", self.path, self.features, self.cross if self.path == "moments" else None)

    def resampling_unit(self) -> str:
        # minibatch CKA is a weighted mean of per-batch unbiased HSICs: cutting a batch into groups would change it
        return "batch" if self.estimator == "minibatch" else "sample"

    def setup(self, ctx: RunContext) -> list[str]:
        self._check_options()
        if self.path == "minibatch" and ctx.batch_size is not None and ctx.batch_size < 4:
            raise MetricNeedsError(
                f"cka: estimator='minibatch' needs at least 4 samples per batch (the unbiased HSIC divides by n - 3), "
                f"but the batch size is {ctx.batch_size}; use a batch size of 4 or more (--batch-size 32), "
                "or estimator='exact'")
        notes = []
        tuned = tuple(ctx.tuned_layers)
        if (tuned and tuned != tuple(ctx.layers)) or not ctx.units_paired:  # another architecture, or other layers
            paired = not tuned or len(tuned) == len(ctx.layers)
            self._tuned_names = list(tuned) if tuned and paired else None
            if self.cross is None:
                self.cross = True
                notes.append("the two models' layers differ, so the full cross-layer matrix (base layers × tuned "
                             "layers) is computed" + ("" if paired else "; the layer lists are not paired, so there "
                                                      "are no per-layer values"))
            elif not self.cross and not paired:
                raise MetricNeedsError(
                    f"cka: cross=False asks for per-layer values only, but the layer lists are not paired "
                    f"({len(ctx.layers)} base and {len(tuned)} tuned layers); drop cross=False (the cross-layer matrix "
                    "is what CKA gives here) or pass lists of equal length to pair layer i with layer i")
        if self.cross is None:
            self.cross = False
        few = _few_samples_note(self, ctx.num_samples, before=True) if ctx.num_samples is not None else ""
        return [_memory_note(self, ctx), *([few] if few else []), *notes]

    # -- streaming ------------------------------------------------------------------------------------------------
    def update(self, step: PairStep) -> None:
        layers, tuned, xs, ys = self._read(step)
        n = xs[0].shape[0]
        if n == 0:
            return
        paired = tuned == layers
        if paired:
            widths = {name: torch.tensor([x.shape[1], y.shape[1]]) for name, x, y in zip(layers, xs, ys)}
        else:  # each model's own layers: the tuned ones under _TUNED keys, which no module path can collide with
            widths = {**{name: torch.tensor([x.shape[1], 0]) for name, x in zip(layers, xs)},
                      **{_TUNED + name: torch.tensor([0, y.shape[1]]) for name, y in zip(tuned, ys)}}
        if self.path == "moments":
            if self.cross or not paired:  # one product of all layers concatenated: (N, ΣP) against (N, ΣQ)
                stats = {"*": _linear_cka_update(torch.cat(xs, dim=1), torch.cat(ys, dim=1))}
            else:  # per-layer blocks only: O(Σ C²) memory
                stats = {name: _linear_cka_update(x, y) for name, x, y in zip(layers, xs, ys)}
            self.moments = _merge_moments(self.moments, {"widths": widths, "stats": stats})
        elif self.path == "minibatch":
            used = n >= 4  # shorter batches cannot be used (n - 3 ≤ 0); counted and reported, never silently
            size = 2 * len(xs)
            h = _minibatch_cka_update(xs, ys) if used else xs[0].new_zeros(size, size, dtype=torch.float64)
            self.hsic = _merge_hsic(self.hsic, {"widths": widths, "sum": h})
            counts, at = self.counts.clone(), 0 if used else 2  # scalar adds: no host-device copy, no sync
            counts[at] += n
            counts[at + 1] += 1
            self.counts = counts
        elif paired:
            keep = {name: {"x": [_stored(x)], "y": [_stored(y)]} for name, x, y in zip(layers, xs, ys)}
            self.kept = _merge_kept(self.kept, keep)
        else:
            keep = {**{name: {"x": [_stored(x)]} for name, x in zip(layers, xs)},
                    **{_TUNED + name: {"y": [_stored(y)]} for name, y in zip(tuned, ys)}}
            self.kept = _merge_kept(self.kept, keep)

    def _read(self, step: PairStep) -> tuple[list[str], list[str], list[Tensor], list[Tensor]]:
        base = {step.layer: step.base} if isinstance(step.base, Activation) else step.base
        tuned = {step.layer: step.tuned} if isinstance(step.tuned, Activation) else step.tuned
        layers, tuned_layers = list(base), list(tuned)
        xs = [base[name].view(self.features).detach() for name in layers]
        ys = [tuned[name].view(self.features).detach() for name in tuned_layers]
        for name, t in [*zip(layers, xs), *zip(tuned_layers, ys)]:
            if t.dim() != 2 or t.shape[0] != xs[0].shape[0]:
                raise ValueError(f"cka: view {self.features!r} of layer {name!r} must be (N, C) with the same N for "
                                 f"both models and all layers; got {tuple(t.shape)} and {tuple(xs[0].shape)}")
        return layers, tuned_layers, xs, ys

    # -- results --------------------------------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        # metadata, as text: the options themselves (debiased, rbf_threshold ...) are in the result's metric record
        meta: dict[str, Any] = {"estimator": self.estimator, "features": self.features, "kernel": self.kernel,
                                "hsic": _HSIC[self.path if self.path == "minibatch" else self.debiased],
                                "dtype": "float64"}
        state = self.moments if self.path == "moments" else self.hsic if self.path == "minibatch" else self.kept
        keys = list(state.get("widths", state))
        if any(k.startswith(_TUNED) for k in keys):  # the layers are not paired: only the cross matrix
            return self._compute_unpaired(meta, keys)
        if self.path == "moments":
            meta["state"] = "streamed centred float64 moments (no features kept)"
            layers, values, ns, matrix, notes = self._compute_moments()
        elif self.path == "minibatch":
            layers, values, ns, matrix, notes = self._compute_minibatch(meta)
        else:
            layers, values, ns, matrix, notes = self._compute_kept(meta)
        few = [_few_samples_note(self, n) for n in ns]
        if any(few):  # degenerate or undefined: NaN with the reason, never the number alone
            values = torch.where(torch.tensor([bool(f) for f in few], device=values.device),
                                 torch.full_like(values, math.nan), values)
            notes = [f or note for f, note in zip(few, notes)]
            if matrix is not None:
                matrix = torch.full_like(matrix, math.nan)
        shuffled = self._shuffled() if self.path == "moments" else []
        out: dict[str, Any] = {}
        for i, name in enumerate(layers):
            out[name] = {"cka": values[i].clone(), "n": ns[i]}
            if shuffled:
                out[name]["cka_shuffled"] = math.nan if few[i] else shuffled[i]
            if notes[i]:
                out[name]["note"] = notes[i]
        meta["layers"] = list(layers)
        if self._tuned_names is not None and len(self._tuned_names) == len(layers):
            meta["tuned_layers"] = list(self._tuned_names)  # paired layers of another model: its own names
        if not layers:
            meta["note"] = "no samples were seen; nothing to compute"
        if self.cross and matrix is not None:
            meta["cka_cross"] = matrix  # rows: base layers, columns: tuned layers, in the order of "layers"
        out["*"] = meta
        return out

    def _compute_unpaired(self, meta: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        """Layers that are not paired (lists of other lengths): the cross-layer matrix, base × tuned, only."""
        base = [k for k in keys if not k.startswith(_TUNED)]
        tuned = [k for k in keys if k.startswith(_TUNED)]
        if self.path == "moments":
            meta["state"] = "streamed centred float64 moments (no features kept)"
            m, widths = self.moments["stats"]["*"], self.moments["widths"]
            wx, wy = [int(widths[k][0]) for k in base], [int(widths[k][1]) for k in tuned]
            matrix = _linear_cka_matrix_compute(m, wx, wy)
            n = int(m["n"])
        elif self.path == "minibatch":
            layers, _, n, matrix, _ = self._compute_minibatch(meta, split=len(base))
            n = n[0] if n else 0
        else:
            joined = {k: torch.cat(next(iter(self.kept[k].values()))) for k in keys}
            xs, ys = [joined[k] for k in base], [joined[k] for k in tuned]
            meta["state"] = f"features of every sample kept in {str(xs[0].dtype).removeprefix('torch.')}"
            _, matrix = _kernel_cka_compute(xs, ys, self.kernel, self.debiased, self.rbf_threshold, True)
            n = xs[0].shape[0]
        few = _few_samples_note(self, n)
        if few:  # too few samples for the estimator: the matrix is NaN, and the note says why
            matrix = torch.full_like(matrix, math.nan)
        meta.update(layers=base, tuned_layers=[k[len(_TUNED):] for k in tuned], cka_cross=matrix, n=n)
        meta["note"] = (f"the layer lists are not paired ({len(base)} base and {len(tuned)} tuned layers): the "
                        "cross-layer matrix only (rows: base layers, columns: tuned layers)")
        if few:
            meta["note"] += f"; {few}"
        return {"*": meta}

    def _moment_blocks(self) -> tuple[list[str], list[tuple[Tensor, Tensor, Tensor, int]]]:
        """Per paired layer: its centred co-moments ``cxx``, ``cyy``, ``cxy`` and its sample count."""
        layers, widths = list(self.moments["widths"]), [w.tolist() for w in self.moments["widths"].values()]
        stats = self.moments["stats"]
        if not self.cross:
            return layers, [(stats[k]["cxx"], stats[k]["cyy"], stats[k]["cxy"], int(stats[k]["n"])) for k in layers]
        m = stats["*"]
        ex = [0, *torch.tensor([w[0] for w in widths]).cumsum(0).tolist()]
        ey = [0, *torch.tensor([w[1] for w in widths]).cumsum(0).tolist()]
        return layers, [(m["cxx"][ex[i]:ex[i + 1], ex[i]:ex[i + 1]], m["cyy"][ey[i]:ey[i + 1], ey[i]:ey[i + 1]],
                         m["cxy"][ex[i]:ex[i + 1], ey[i]:ey[i + 1]], int(m["n"])) for i in range(len(layers))]

    def _compute_moments(self) -> tuple[list[str], Tensor, list[int], Tensor | None, list[str]]:
        if not self.moments:
            return [], torch.zeros(0), [], None, []
        layers, blocks = self._moment_blocks()
        matrix = None
        if self.cross:
            widths = [w.tolist() for w in self.moments["widths"].values()]
            matrix = _linear_cka_matrix_compute(self.moments["stats"]["*"], [w[0] for w in widths],
                                                [w[1] for w in widths])
        values = torch.stack([_linear_cka_compute(cxx, cyy, cxy) for cxx, cyy, cxy, _ in blocks])
        notes = [_nan_note(bool(v.isnan()), bool((cxx == 0).all()), bool((cyy == 0).all()),
                           nonfinite=not bool(torch.isfinite(cxx).all() and torch.isfinite(cyy).all()))
                 for v, (cxx, cyy, _, _) in zip(values, blocks)]
        return layers, values, [b[3] for b in blocks], matrix, notes

    def _shuffled(self) -> list[float]:
        """Per layer, the expected (biased, linear) CKA when the tuned model's images are paired with the base's at
        random: ``tr(Cxx) tr(Cyy) / ((n − 1) ‖Cxx‖_F ‖Cyy‖_F)``, exact from the moments (no second pass). For a
        random permutation P of centred Grams K, L, E tr(K P L Pᵀ) = tr(K) tr(L) / (n − 1), and the two
        self-similarities do not depend on the pairing. This is the chance level of this estimator on these images:
        far above 0 for wide layers on few images."""
        if not self.moments:
            return []
        out = []
        for cxx, cyy, _, n in self._moment_blocks()[1]:
            den = (n - 1) * torch.linalg.vector_norm(cxx) * torch.linalg.vector_norm(cyy)
            out.append(float(torch.trace(cxx) * torch.trace(cyy) / den) if n > 1 and den > 0 else math.nan)
        return out

    def _compute_minibatch(self, meta: dict[str, Any], split: int | None = None
                           ) -> tuple[list[str], Tensor, list[int], Tensor, list[str]]:
        used, batches, skipped_samples, skipped_batches = (int(c) for c in self.counts)
        meta.update(weighting="each batch's unbiased HSIC weighted by its sample count", batches=batches,
                    batches_skipped=skipped_batches, samples_skipped=skipped_samples)
        if skipped_batches:
            meta["note"] = (f"skipped {skipped_batches} batch(es) with fewer than 4 samples ({skipped_samples} "
                            "samples in all): the unbiased HSIC needs n ≥ 4")
        if not self.hsic:
            return [], torch.zeros(0), [], torch.zeros(0, 0), []
        layers, h = list(self.hsic["widths"]), self.hsic["sum"]
        if split is not None:  # layers not paired: rows are the first `split` (base) layers, columns the rest
            return layers, torch.zeros(0), [used], _minibatch_cka_compute(h, split)[1], []
        values, matrix = _minibatch_cka_compute(h, len(layers))
        self_h = h.diagonal()
        notes = [_nan_note(bool(v.isnan()), bool(self_h[i] == 0), bool(self_h[len(layers) + i] == 0), used == 0)
                 for i, v in enumerate(values)]
        return layers, values, [used] * len(layers), matrix, notes

    def _compute_kept(self, meta: dict[str, Any]) -> tuple[list[str], Tensor, list[int], Tensor | None, list[str]]:
        if not self.kept:
            return [], torch.zeros(0), [], None, []
        layers, old = list(self.kept), self.kept
        self.kept = dict(old)  # join each layer's chunks once, layer by layer (the peak is one layer's copy);
        for name in layers:  # new dicts, so a state shared with another instance is not modified
            self.kept[name] = {side: [torch.cat(chunks)] if len(chunks) > 1 else chunks
                               for side, chunks in old[name].items()}
        del old
        xs = [self.kept[name]["x"][0] for name in layers]
        ys = [self.kept[name]["y"][0] for name in layers]
        meta["state"] = f"features of every sample kept in {str(xs[0].dtype).removeprefix('torch.')}"
        values, matrix = _kernel_cka_compute(xs, ys, self.kernel, self.debiased, self.rbf_threshold, self.cross)
        notes = [_nan_note(bool(v.isnan()), _is_constant(x), _is_constant(y)) for v, x, y in zip(values, xs, ys)]
        return layers, values, [x.shape[0] for x in xs], matrix, notes


# ----------------------------------------------------------------------------------------------------------------
# State reductions (shared by update and merge_state, so shards merge exactly like the sequential pass)


def _check_same_layers(a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    if list(a) != list(b):
        raise ValueError(f"cannot merge CKA states over different layers: {list(a)} and {list(b)}")


def _merge_moments(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not a or not b:
        return a or b
    _check_same_layers(a["widths"], b["widths"])
    return {"widths": a["widths"], "stats": {k: _linear_cka_merge(a["stats"][k], b["stats"][k]) for k in a["stats"]}}


def _merge_hsic(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not a or not b:
        return a or b
    _check_same_layers(a["widths"], b["widths"])
    return {"widths": a["widths"], "sum": a["sum"] + b["sum"]}


def _merge_kept(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not a or not b:
        return a or b
    _check_same_layers(a, b)
    return {k: {side: [*a[k][side], *b[k][side]] for side in a[k]} for k in a}  # "x" and "y", or one side


def _stored(x: Tensor) -> Tensor:
    """Kept features: float64 activations stay float64, every other dtype is stored as float32."""
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32, copy=True)


_HSIC = {False: "biased", True: "unbiased (debiased CKA)", "minibatch": "unbiased, per batch"}


def _min_samples(metric: CKA) -> int:
    """The fewest samples with which the metric's estimator means something: 3 for biased CKA (2 centred samples
    span one direction: CKA is 1 for any two models), 4 for the unbiased HSIC (it divides by n − 3)."""
    return 4 if metric.debiased or metric.estimator == "minibatch" else 3


def _few_samples_note(metric: CKA, n: int, before: bool = False) -> str:
    """Why a value on ``n`` samples is NaN (``""`` when ``n`` is enough); ``before``: the caution for ``setup``."""
    need = _min_samples(metric)
    if n >= need or (n == 0 and not before):  # no sample at all has its own note
        return ""
    if metric.estimator == "minibatch":
        what, why = "minibatch CKA", "per batch (the unbiased HSIC divides by n − 3)"
    elif metric.debiased:
        what, why = "debiased CKA", "(the unbiased HSIC divides by n − 3)"
    else:
        what, why = f"{metric.kernel} CKA", ("(centred, 2 samples are x and −x: one direction, so CKA would be 1 "
                                             "for any two models)")
    plural = "s" if n != 1 else ""
    if before:
        return (f"the data has {n} sample{plural}, and {what} needs at least {need} {why}: its values will be NaN, "
                "each with a note; use more images")
    return f"NaN: {n} sample{plural}; {what} needs at least {need} {why}"


def _nan_note(is_nan: bool, const_x: bool, const_y: bool, no_data: bool = False, nonfinite: bool = False) -> str:
    if not is_nan:
        return ""
    if nonfinite:
        return ("NaN: non-finite activations (NaN or Inf) at this layer (see the run's warnings), so the "
                "statistics are not finite; check the inputs and the model's numerics")
    if no_data:
        return "NaN: no batch had at least 4 samples, so the minibatch estimator saw no data"
    sides = [side for side, const in (("base", const_x), ("tuned", const_y)) if const]
    if sides:
        return (f"NaN: the {' and '.join(sides)} features are constant over the samples (zero variance), so CKA is "
                "0/0; check for a dead layer or a layer before its input changes")
    return "NaN: the self-similarity estimate is not positive (too few samples for this estimator)"


# ----------------------------------------------------------------------------------------------------------------
# Memory estimate (setup)


def _width(shape: Sequence[int] | None, features: str) -> int | None:
    """Features per sample of a layer whose output shape (without batch) is ``shape``, under the views' rule."""
    if shape is None or len(shape) == 0:
        return None
    if features == "flatten":
        return math.prod(shape)
    return shape[-1] if len(shape) == 2 else shape[0]  # (T, D) tokens → D; (C, H, W) → C; (D,) → D


def _gb(nbytes: float) -> str:
    """A byte count for people: ``16.6 GB``, ``25.2 MB``, ``57 kB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def _memory_note(metric: CKA, ctx: RunContext) -> str:
    """Estimate the plan's memory, refuse it over ``max_memory_gb``, or return the estimate as a note."""
    layers = ctx.layers or tuple(ctx.shapes)
    widths = [_width(ctx.shapes.get(name), metric.features) for name in layers]
    path, n, b = metric.path, ctx.num_samples, ctx.batch_size
    if not layers or any(w is None for w in widths):
        return f"{metric.estimator}: memory estimate unknown (layer shapes not known before the pass)"
    cs = [int(w) for w in widths if w is not None]
    tuned = [_width(ctx.tuned_shapes.get(name), metric.features) for name in ctx.tuned_layers]
    ct = [int(w) for w in tuned if w is not None] if tuned and None not in tuned else cs  # the tuned model's widths
    total_c = (sum(cs) + sum(ct)) // 2  # per model, on average: the two models' layers may differ in width
    if path == "moments":
        state = 8 * 3 * total_c**2 if metric.cross else 8 * 3 * sum(c * c for c in cs)
        peak = 8 * 4 * (total_c**2 if metric.cross else max(cs) ** 2)  # the batch's (2C)² product
        what = f"streamed float64 moments: about {_gb(state)} of state + {_gb(peak)} per batch"
    elif path == "minibatch":
        if b is None:
            return "minibatch: memory estimate unknown (batch size not known); the state is O(layers²)"
        state, peak = 8 * (2 * len(cs)) ** 2, 8 * 2 * len(cs) * b * b
        what = f"minibatch HSIC: {_gb(state)} of state + {_gb(peak)} per batch of {b}"
    else:
        if n is None:
            return (f"exact {metric.kernel}, {metric.features}: memory estimate unknown (the data source has no "
                    f"length); it keeps {_gb(4 * 2 * total_c)} per sample (float32) until compute")
        state, c = 4 * n * 2 * total_c, max(cs)
        if metric.kernel == "rbf" or metric.cross or not _feature_form_is_cheaper(n, c, c):
            dense = 8 * 4 * n * n + 8 * min(n * c, _CHUNK_ELEMENTS)  # two N×N Grams and their centring
        else:
            dense = 8 * (n * 2 * c + 2 * 3 * c * c)  # float64 features and the C×C products
        peak = 4 * n * 2 * c + dense + (8 * 2 * len(cs) * n * n if metric.cross else 0)
        what = (f"keeps every sample's features ({n} samples × 2 models × {total_c} features × 4 bytes = "
                f"{_gb(state)}) + about {_gb(peak)} to compute")
    if (state + peak) / 1e9 > metric.max_memory_gb:
        fixes = ["cross=False"] if metric.cross else []
        if path == "kept":
            fixes += ["features='gap' (the study's default)"] if metric.features == "flatten" else []
            fixes += ["estimator='minibatch' (O(batch²) memory)"] if metric.kernel == "linear" else []
            fixes += ["fewer samples"]
        fixes.append(f"max_memory_gb above {(state + peak) / 1e9:.3g}")
        raise MetricNeedsError(f"cka ({metric.estimator}, {metric.kernel}, {metric.features} features) needs about "
                               f"{_gb(state + peak)}: it {what}; that is over max_memory_gb={metric.max_memory_gb}. "
                               f"Fix: use {', or '.join(fixes)}.")
    return f"{metric.estimator}, {metric.kernel}, {metric.features} features: {what}"
