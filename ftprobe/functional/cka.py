"""Centred kernel alignment (CKA) as pure functions: tensors in, float64 tensors out.

Kornblith, Norouzi, Lee, Hinton. *Similarity of Neural Network Representations Revisited.* ICML 2019 (linear, RBF
and debiased CKA); Nguyen, Raghu, Kornblith. *Do Wide and Deep Networks Learn the Same Things?* ICLR 2021
(minibatch CKA from the unbiased HSIC_1). Values match Google's ``representation_similarity/Demo.ipynb``.

Numerical rules (DESIGN.md): everything is cast to float64 before any product; features are centred in feature
space, never a float32 Gram matrix; nothing is clamped and no epsilon is added, so constant features give NaN (0/0).

The stateful :class:`ftprobe.metrics.cka.CKA` is built on the private ``_*_update`` / ``_*_merge`` / ``_*_compute``
helpers below, so the class and these functions cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ftprobe.functional._cka_grams import (
    _center_gram,
    _check_features,
    _debiased_feature_cka,
    _feature_form_is_cheaper,
    _gram_cosine,
    _gram_linear,
    _gram_rbf,
    _shifted64,
    _ucenter_gram,
)

__all__ = ["hsic_unbiased", "linear_cka", "linear_cka_debiased", "linear_cka_matrix", "minibatch_cka", "rbf_cka"]

Moments = dict[str, Tensor]  # "n" () int64, "mean_x" (P,), "mean_y" (Q,), "cxx" (P, P), "cyy" (Q, Q), "cxy" (P, Q)


# ----------------------------------------------------------------------------------------------------------------
# Exact linear CKA from streamed, centred float64 moments (memory O(C²), no features kept)


def _linear_cka_update(x: Tensor, y: Tensor) -> Moments:
    """Centred moments of one batch: ``x`` ``(N, P)``, ``y`` ``(N, Q)`` → :data:`Moments` (float64).

    The batch is shifted by its first sample, then centred on its own mean, before the single product
    ``[Xc | Yc]ᵀ [Xc | Yc]``: large means never reach a product, and constant columns are exactly zero. Batches are
    then combined with :func:`_linear_cka_merge`.
    """
    _check_features(x, y)
    p = x.shape[1]
    (sx, shift_x), (sy, shift_y) = _shifted64(x), _shifted64(y)
    mean_sx, mean_sy = sx.mean(dim=0), sy.mean(dim=0)
    w = torch.cat([sx - mean_sx, sy - mean_sy], dim=1)
    g = w.T @ w
    return {
        "n": x.new_full((), x.shape[0], dtype=torch.int64),  # a fill kernel: no host-device copy in the batch loop
        "mean_x": shift_x + mean_sx,
        "mean_y": shift_y + mean_sy,
        "cxx": g[:p, :p].contiguous(),  # contiguous copies: the (P+Q)² product is freed
        "cyy": g[p:, p:].contiguous(),
        "cxy": g[:p, p:].contiguous(),
    }


def _linear_cka_merge(a: Moments, b: Moments) -> Moments:
    """Chan, Golub, LeVeque's parallel update of two shards' moments (neither argument is modified).

    ``C_ab = C_a + C_b + outer(δx, δy) · n_a n_b / n`` with ``δ = mean_b − mean_a``; merging shards in any
    grouping equals one sequential pass up to rounding.
    """
    n = a["n"] + b["n"]
    n64 = n.to(torch.float64)
    frac_b = b["n"].to(torch.float64) / n64
    weight = a["n"].to(torch.float64) * b["n"].to(torch.float64) / n64
    dx, dy = b["mean_x"] - a["mean_x"], b["mean_y"] - a["mean_y"]
    return {
        "n": n,
        "mean_x": a["mean_x"] + dx * frac_b,
        "mean_y": a["mean_y"] + dy * frac_b,
        "cxx": torch.add(a["cxx"], b["cxx"]).add_(torch.outer(dx * weight, dx)),
        "cyy": torch.add(a["cyy"], b["cyy"]).add_(torch.outer(dy * weight, dy)),
        "cxy": torch.add(a["cxy"], b["cxy"]).add_(torch.outer(dx * weight, dy)),
    }


def _linear_cka_compute(cxx: Tensor, cyy: Tensor, cxy: Tensor) -> Tensor:
    """``‖Cxy‖²_F / (‖Cxx‖_F ‖Cyy‖_F)`` from centred co-moments ``(P, P)``, ``(Q, Q)``, ``(P, Q)``: 0-d."""
    return torch.linalg.vector_norm(cxy) ** 2 / (torch.linalg.vector_norm(cxx) * torch.linalg.vector_norm(cyy))


def _linear_cka_matrix_compute(m: Moments, widths_x: Sequence[int], widths_y: Sequence[int]) -> Tensor:
    """Cross-layer matrix from the moments of concatenated layers: entry ``(i, j)`` is CKA(base i, tuned j).

    Args:
        m: moments of ``[X_1 | … | X_L]`` ``(N, ΣP)`` against ``[Y_1 | … | Y_M]`` ``(N, ΣQ)``.
        widths_x: ``P_1 … P_L``; widths_y: ``Q_1 … Q_M``.

    Returns:
        ``(L, M)`` float64. Block norms of ``Cxy`` come from one product with segment indicators.
    """
    dev = m["cxy"].device

    def indicator(widths: Sequence[int]) -> Tensor:  # (ΣW, L): row r is one-hot for the layer of feature r
        seg = torch.repeat_interleave(torch.arange(len(widths), device=dev), torch.tensor(list(widths), device=dev))
        return torch.nn.functional.one_hot(seg, len(widths)).to(torch.float64)

    num = indicator(widths_x).T @ m["cxy"].square() @ indicator(widths_y)  # (L, M): ‖Cxy_ij‖²

    def block_norms(c: Tensor, widths: Sequence[int]) -> Tensor:
        edges = [0, *torch.tensor(list(widths)).cumsum(0).tolist()]
        return torch.stack([torch.linalg.vector_norm(c[s:e, s:e]) for s, e in zip(edges[:-1], edges[1:])])

    return num / (block_norms(m["cxx"], widths_x)[:, None] * block_norms(m["cyy"], widths_y)[None, :])


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Exact linear CKA (Kornblith et al. 2019) between two feature matrices of the same samples.

    ``CKA = ‖Xcᵀ Yc‖²_F / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F)`` with column-centred float64 features. Uses the
    feature-space products when ``P, Q`` are small, the centred N×N Gram matrices otherwise (the same number).

    Args:
        x: ``(N, P)`` features of model 1 (any float dtype).
        y: ``(N, Q)`` features of model 2, same samples in the same order.

    Returns:
        0-d float64 tensor; NaN when either side is constant over the samples.

    Example:
        >>> import numpy as np
        >>> np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X
        >>> round(linear_cka(torch.from_numpy(X), torch.from_numpy(Y)).item(), 5)
        0.55761
    """
    _check_features(x, y)
    if _feature_form_is_cheaper(x.shape[0], x.shape[1], y.shape[1]):
        m = _linear_cka_update(x, y)
        return _linear_cka_compute(m["cxx"], m["cyy"], m["cxy"])
    return _gram_cosine(_gram_linear(x), _gram_linear(y))


def linear_cka_matrix(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Exact linear CKA of every ``xs[i]`` against every ``ys[j]`` from one product of the concatenated features.

    Args:
        xs: ``L`` tensors ``(N, P_i)``; ys: ``M`` tensors ``(N, Q_j)``.

    Returns:
        ``(L, M)`` float64; the diagonal of a square call is the per-layer :func:`linear_cka`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(50, 3, generator=g), torch.randn(50, 4, generator=g)
        >>> linear_cka_matrix([a, b], [a, b]).diagonal().round(decimals=6).tolist()
        [1.0, 1.0]
    """
    m = _linear_cka_update(torch.cat(list(xs), dim=1), torch.cat(list(ys), dim=1))
    return _linear_cka_matrix_compute(m, [t.shape[1] for t in xs], [t.shape[1] for t in ys])


# ----------------------------------------------------------------------------------------------------------------
# Estimators that need every sample at once (kept features): debiased linear, RBF


def _kernel_gram(x: Tensor, kernel: str, debiased: bool, threshold: float) -> Tensor:
    """The centred (biased) or U-centred (debiased) Gram matrix ``(N, N)`` float64 of features ``(N, P)``."""
    if kernel == "rbf":
        k = _gram_rbf(x, threshold)
        return _ucenter_gram(k) if debiased else _center_gram(k)
    if kernel != "linear":
        raise ValueError(f"unknown kernel {kernel!r}; use 'linear' or 'rbf'")
    k = _gram_linear(x)  # from centred features: already double-centred
    return _ucenter_gram(k) if debiased else k


def _kernel_cka_pair(x: Tensor, y: Tensor, kernel: str, debiased: bool, threshold: float) -> Tensor:
    """Exact CKA of one pair of feature matrices ``(N, P)``, ``(N, Q)``, choosing the cheaper exact form."""
    _check_features(x, y)
    if kernel == "linear" and _feature_form_is_cheaper(x.shape[0], x.shape[1], y.shape[1]):
        return _debiased_feature_cka(x, y) if debiased else linear_cka(x, y)
    return _gram_cosine(_kernel_gram(x, kernel, debiased, threshold), _kernel_gram(y, kernel, debiased, threshold))


def _kernel_cka_compute(
    xs: Sequence[Tensor], ys: Sequence[Tensor], kernel: str, debiased: bool, threshold: float, cross: bool
) -> tuple[Tensor, Tensor | None]:
    """Exact CKA of kept features, per layer and optionally across layers.

    Args:
        xs, ys: ``L`` base / tuned feature matrices ``(N, P_l)`` / ``(N, Q_l)`` (with ``cross``, ``L`` and ``M``:
            the two models' layer lists may differ in length).

    Returns:
        ``(L,)`` per-layer values, and the ``(L, M)`` cross matrix (base i × tuned j) when ``cross`` else ``None``.
        The cross matrix stacks the ``2L`` flattened centred Grams ``(2L, N²)`` and takes one product.
    """
    if not cross:
        return torch.stack([_kernel_cka_pair(x, y, kernel, debiased, threshold) for x, y in zip(xs, ys)]), None
    for x, y in zip(xs, ys):
        _check_features(x, y)
    n = xs[0].shape[0]
    grams = torch.empty(len(xs) + len(ys), n * n, dtype=torch.float64, device=xs[0].device)  # filled row by row
    for row, t in enumerate((*xs, *ys)):
        grams[row] = _kernel_gram(t, kernel, debiased, threshold).reshape(-1)
    h = grams @ grams.T
    matrix = _hsic_ratio(h, len(xs))
    return matrix.diagonal().clone(), matrix


def _hsic_ratio(h: Tensor, num_layers: int) -> Tensor:
    """``(L, L)`` CKA ratios from a ``(2L, 2L)`` matrix of (weighted) HSIC sums between ``[X_1..X_L, Y_1..Y_L]``."""
    self_x, self_y = h.diagonal()[:num_layers], h.diagonal()[num_layers:]
    return h[:num_layers, num_layers:] / (torch.sqrt(self_x)[:, None] * torch.sqrt(self_y)[None, :])


def linear_cka_debiased(x: Tensor, y: Tensor) -> Tensor:
    """Exact linear CKA with the unbiased HSIC estimator (Kornblith et al. 2019, section 3; Song et al. 2012).

    Args:
        x: ``(N, P)``; y: ``(N, Q)``; ``N ≥ 4``.

    Returns:
        0-d float64 tensor (may be slightly negative for unrelated features; never clamped).

    Example:
        >>> import numpy as np
        >>> np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X
        >>> round(linear_cka_debiased(torch.from_numpy(X), torch.from_numpy(Y)).item(), 5)
        0.51346
    """
    _check_min_samples(x.shape[0], "debiased CKA")
    return _kernel_cka_pair(x, y, "linear", True, 0.0)


def rbf_cka(x: Tensor, y: Tensor, threshold: float = 0.5, debiased: bool = False) -> Tensor:
    """Exact RBF-kernel CKA (Kornblith et al. 2019) with Google's bandwidth rule.

    ``σ² = threshold² · median of the squared pairwise distances`` (full N×N matrix, zero diagonal included).

    Args:
        x: ``(N, P)``; y: ``(N, Q)``.
        threshold: bandwidth as a fraction of the median distance.
        debiased: U-centre the Gram matrices (unbiased HSIC) instead of double-centring them.

    Returns:
        0-d float64 tensor.

    Example:
        >>> import numpy as np
        >>> np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X
        >>> round(rbf_cka(torch.from_numpy(X), torch.from_numpy(Y), threshold=0.5).item(), 5)
        0.65483
    """
    if debiased:
        _check_min_samples(x.shape[0], "debiased CKA")
    return _kernel_cka_pair(x, y, "rbf", debiased, threshold)


# ----------------------------------------------------------------------------------------------------------------
# Minibatch CKA (Nguyen et al. 2021)


def _check_min_samples(n: int, what: str) -> None:
    if n < 4:
        raise ValueError(f"{what} needs at least 4 samples (the unbiased HSIC divides by N - 3), got {n}")


def hsic_unbiased(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741 (the literature's name)
    """Unbiased HSIC_1 of two Gram matrices (Song et al. 2012; U-centred form of Nguyen et al. 2021, eq. 3).

    ``HSIC_1(K, L) = <U(K), U(L)>_F / (N (N - 3))`` with the Székely–Rizzo U-centring (Google's notebook form).

    Args:
        k: ``(N, N)`` symmetric Gram matrix; l: ``(N, N)``; ``N ≥ 4``.

    Returns:
        0-d float64 tensor.

    Example:
        >>> x = torch.arange(12.0).reshape(6, 2)
        >>> hsic_unbiased(x @ x.T, torch.ones(6, 6)).item()  # a constant kernel carries no dependence
        0.0
    """
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(f"hsic_unbiased takes two (N, N) Gram matrices, got {tuple(k.shape)} and {tuple(l.shape)}")
    n = k.shape[0]
    _check_min_samples(n, "hsic_unbiased")
    return (_ucenter_gram(k) * _ucenter_gram(l)).sum() / (n * (n - 3))


def _minibatch_cka_update(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """One batch's weighted HSIC_1 between all layers: ``(2L, 2L)`` float64, ``n · HSIC_1`` of every pair of
    ``[X_1..X_L, Y_1..Y_L]``.

    As Google's ``MinibatchCKA``: each layer's U-centred linear Gram is flattened to ``N²``, the ``2L`` rows are
    stacked and one product gives every pair. The weight is the batch's sample count ``n`` (so a short last batch
    counts for its size); features are centred on the batch mean first (U-centring ignores it, rounding does not).

    Args:
        xs, ys: ``L`` tensors ``(n, P_l)`` / ``(n, Q_l)`` of one batch, ``n ≥ 4``.
    """
    n = xs[0].shape[0]
    _check_min_samples(n, "minibatch CKA")
    for x, y in zip(xs, ys):
        _check_features(x, y)
    grams = torch.stack([_ucenter_gram(_gram_linear(t)).reshape(-1) for t in (*xs, *ys)])
    return (grams @ grams.T) / (n - 3)  # n · <U(K), U(L)> / (n (n - 3))


def _minibatch_cka_compute(h: Tensor, num_layers: int) -> tuple[Tensor, Tensor]:
    """Per-layer ``(L,)`` and cross-layer ``(L, L)`` minibatch CKA from the summed ``(2L, 2L)`` weighted HSICs."""
    matrix = _hsic_ratio(h, num_layers)
    return matrix.diagonal().clone(), matrix


def minibatch_cka(x_batches: Sequence[Tensor], y_batches: Sequence[Tensor]) -> Tensor:
    """Minibatch linear CKA (Nguyen et al. 2021): the ratio of batch-summed unbiased HSIC_1 values.

    ``CKA = Σ n_i HSIC_1(X_i, Y_i) / sqrt(Σ n_i HSIC_1(X_i, X_i) · Σ n_i HSIC_1(Y_i, Y_i))``; with equal batches
    this is Nguyen's plain average. Each batch needs ``n_i ≥ 4`` (the metric class skips and reports shorter ones).

    Args:
        x_batches: batches ``(n_i, P)`` of model 1; y_batches: the same samples' ``(n_i, Q)`` of model 2.

    Returns:
        0-d float64 tensor.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> xb = [torch.randn(16, 5, generator=g) for _ in range(3)]
        >>> round(minibatch_cka(xb, [3 * b - 1 for b in xb]).item(), 6)
        1.0
    """
    if len(x_batches) != len(y_batches) or not x_batches:
        raise ValueError(f"need the same non-zero number of batches, got {len(x_batches)} and {len(y_batches)}")
    h = sum(_minibatch_cka_update([x], [y]) for x, y in zip(x_batches, y_batches))
    return _minibatch_cka_compute(h, 1)[0][0]


def _is_constant(x: Tensor) -> bool:
    """Whether every column of ``(N, P)`` is constant over the samples (zero variance; compute-time only)."""
    return bool((x == x[:1]).all())
