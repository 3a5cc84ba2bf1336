"""Gram-matrix helpers behind :mod:`ftprobe.functional.cka` (private).

Every helper works in float64. Features are centred in feature space *before* a Gram matrix is formed, so a large
common offset in float32 activations never meets a cancelling subtraction (PEERS.md §6.1); the centring of a Gram
that follows is then exact algebra on already-centred numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []

_CHUNK_ELEMENTS = 1 << 20  # float64 elements per column chunk when forming an N×N Gram (8 MB)


def _check_features(x: Tensor, y: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` and ``y`` are ``(N, P)`` / ``(N, Q)`` feature matrices with ``N ≥ 1``."""
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(
            f"CKA takes 2-D features (N samples, C features), got shapes {tuple(x.shape)} and {tuple(y.shape)}; "
            "reduce conv maps first (x.mean((2, 3)) or x.flatten(1))"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of samples (rows), got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("CKA of zero samples is undefined")


def _shifted64(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` cast to float64 and shifted by its first sample: ``(N, P)`` → (``(N, P)``, shift ``(P,)``).

    The shift is the classic "shifted data" trick: it removes a large common offset before any sum, and makes a
    constant column exactly zero (a plain mean of N copies of 0.1 is not exactly 0.1, which would leave rounding
    residue in place of the zero variance that must give NaN).
    """
    x = x.detach().to(torch.float64, copy=True)  # a copy of its own, so the in-place shift never reaches the input
    shift = x[0].clone() if x.shape[0] else x.new_zeros(x.shape[1:])
    return x.sub_(shift), shift


def _centred64(x: Tensor) -> Tensor:
    """``x`` cast to float64, minus its column means: ``(N, P)`` → ``(N, P)``; constant columns become exactly 0.

    One float64 copy of ``x`` at most is alive (shift and centring are in place): for flattened conv maps this copy
    is the largest allocation a CKA update makes.
    """
    s, _ = _shifted64(x)
    return s.sub_(s.mean(dim=0, keepdim=True))


def _gram_linear(x: Tensor) -> Tensor:
    """Linear Gram matrix of the centred features: ``(N, P)`` → ``(N, N)`` float64 (already double-centred).

    Columns are cast and centred in chunks (centring is per column), so a wide float32 ``x`` (flattened conv maps)
    never needs a full float64 copy: the peak is the N×N result plus one ``(N, chunk)`` block.
    """
    n, p = x.shape
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    if step >= p:
        xc = _centred64(x)
        return xc @ xc.T
    gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for lo in range(0, p, step):
        xc = _centred64(x[:, lo : lo + step])
        gram.addmm_(xc, xc.T)
    return gram


def _median(x: Tensor) -> Tensor:
    """Median of every entry, averaging the two middle values for an even count (as ``np.median`` does)."""
    flat = x.reshape(-1)
    m = flat.numel()
    lo = torch.kthvalue(flat, (m + 1) // 2).values
    if m % 2:
        return lo
    return (lo + torch.kthvalue(flat, m // 2 + 1).values) / 2


def _gram_rbf(x: Tensor, threshold: float) -> Tensor:
    """RBF Gram ``exp(-d²_ij / (2 σ²))`` with ``σ² = threshold² · median(d²)``: ``(N, P)`` → ``(N, N)``.

    Google's rule (``representation_similarity/Demo.ipynb``, ``gram_rbf``): the median is taken over the full N×N
    matrix of squared distances, zero diagonal included.
    """
    dots = _gram_linear(x)  # distances are translation-invariant; centring keeps the norm expansion accurate
    sq_norms = dots.diagonal()
    sq_dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * dots
    sq_dist.fill_diagonal_(0.0)  # exactly zero, as it is; the expansion leaves rounding residue there
    return torch.exp(-sq_dist / (2.0 * threshold**2 * _median(sq_dist)))


def _center_gram(k: Tensor) -> Tensor:
    """Double centring ``H K H`` with ``H = I - 11ᵀ/N`` (the biased HSIC's centring): ``(N, N)`` → ``(N, N)``."""
    k = k.to(torch.float64)
    k = k - k.mean(dim=0, keepdim=True)
    return k - k.mean(dim=1, keepdim=True)


def _ucenter_gram(k: Tensor) -> Tensor:
    """U-centring of a symmetric Gram matrix (Székely & Rizzo 2014), as in Google's ``center_gram(unbiased=True)``.

    ``<U(K), U(L)> / (N (N - 3))`` is the unbiased HSIC_1 of Song et al. (2012). Needs ``N ≥ 4``.

    Args:
        k: ``(N, N)`` symmetric Gram matrix.

    Returns:
        ``(N, N)`` float64 with a zero diagonal.
    """
    n = k.shape[0]
    k = k.to(torch.float64).clone()
    k.fill_diagonal_(0.0)
    means = k.sum(dim=0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    u = k - means[:, None] - means[None, :]
    u.fill_diagonal_(0.0)
    return u


def _gram_cosine(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741 (the literature's name)
    """``<K, L>_F / (‖K‖_F ‖L‖_F)`` of two centred (or U-centred) Gram matrices: 0-d float64."""
    return (k * l).sum() / (torch.linalg.vector_norm(k) * torch.linalg.vector_norm(l))


def _debiased_feature_cka(x: Tensor, y: Tensor) -> Tensor:
    """Debiased linear CKA in feature space (Google's ``feature_space_linear_cka(debiased=True)``): 0-d float64.

    Equal to the U-centred Gram form; cheaper when the widths ``P, Q`` are below ``N``. A negative debiased
    self-similarity (possible at small ``N``) gives NaN through the square root; nothing is clamped.
    """
    n = x.shape[0]
    xc, yc = _centred64(x), _centred64(y)
    rows_x, rows_y = (xc * xc).sum(dim=1), (yc * yc).sum(dim=1)
    sq_x, sq_y = rows_x.sum(), rows_y.sum()

    def debias(dot: Tensor, ra: Tensor, rb: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
        return dot - n / (n - 2.0) * (ra @ rb) + sa * sb / ((n - 1.0) * (n - 2.0))

    xty = torch.linalg.vector_norm(xc.T @ yc) ** 2
    xtx = torch.linalg.vector_norm(xc.T @ xc) ** 2
    yty = torch.linalg.vector_norm(yc.T @ yc) ** 2
    num = debias(xty, rows_x, rows_y, sq_x, sq_y)
    norm_x = torch.sqrt(debias(xtx, rows_x, rows_x, sq_x, sq_x))
    norm_y = torch.sqrt(debias(yty, rows_y, rows_y, sq_y, sq_y))
    return num / (norm_x * norm_y)


def _feature_form_is_cheaper(n: int, p: int, q: int) -> bool:
    """Whether the P×Q feature-space products take less memory than two N×N Gram matrices."""
    return p * p + q * q + p * q <= 2 * n * n
