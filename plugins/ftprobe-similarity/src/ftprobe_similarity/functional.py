"""Pure functions (tensors in, tensors out) behind the metrics, and the streamed statistics they share.

SVCCA, PWCCA and the Procrustes distance depend on the features only through ``n``, the means and the centred second
moments ``Cxx = X̃ᵀX̃``, ``Cyy = ỸᵀỸ``, ``Cxy = X̃ᵀỸ`` (X̃ = X − mean). :func:`moments` computes them for one batch in
float64 and :func:`merge_moments` combines two batches exactly (Chan, Golub & LeVeque's parallel update), so the
metrics stream over a dataset in O(P² + Q² + PQ) memory and give the full-matrix result. Centring each batch before
its product (instead of summing raw ``ΣxxᵀΣ`` and subtracting ``n μμᵀ`` at the end) keeps large feature means from
cancelling digits.

Mutual k-NN needs the samples themselves; :func:`mutual_knn` works on the feature matrices.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RANK_TOL",
    "merge_moments",
    "moments",
    "mutual_knn",
    "procrustes",
    "procrustes_from_moments",
    "pwcca",
    "pwcca_from_moments",
    "svcca",
    "svcca_from_moments",
]

Moments = dict[str, Tensor]
RANK_TOL = 1e-10
"""Eigenvalues of ``Cxx`` below ``RANK_TOL × the largest`` are taken as zero (directions with no variance)."""


def moments(x: Tensor, y: Tensor) -> Moments:
    """Centred float64 moments of one batch: ``x`` ``(N, P)``, ``y`` ``(N, Q)`` → ``{"n", "mean_x", "mean_y",
    "cxx" (P, P), "cyy" (Q, Q), "cxy" (P, Q)}``."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, P) and (N, Q) with the same N, got {tuple(x.shape)}, {tuple(y.shape)}")
    p = x.shape[1]
    x64, y64 = x.detach().to(torch.float64), y.detach().to(torch.float64)
    mean_x, mean_y = x64.mean(dim=0), y64.mean(dim=0)
    w = torch.cat([x64 - mean_x, y64 - mean_y], dim=1)
    g = w.T @ w
    return {"n": x.new_full((), x.shape[0], dtype=torch.int64), "mean_x": mean_x, "mean_y": mean_y,
            "cxx": g[:p, :p].contiguous(), "cyy": g[p:, p:].contiguous(), "cxy": g[:p, p:].contiguous()}


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Combine two batches' moments (either may be ``{}``, an empty state); neither argument is modified."""
    if not a or not b:
        return a or b
    if a["cxy"].shape != b["cxy"].shape:
        raise ValueError(f"cannot merge moments of {tuple(a['cxy'].shape)} and {tuple(b['cxy'].shape)} features")
    n = a["n"] + b["n"]
    frac_b = b["n"].to(torch.float64) / n.to(torch.float64)
    weight = a["n"].to(torch.float64) * frac_b
    dx, dy = b["mean_x"] - a["mean_x"], b["mean_y"] - a["mean_y"]
    return {"n": n, "mean_x": a["mean_x"] + dx * frac_b, "mean_y": a["mean_y"] + dy * frac_b,
            "cxx": a["cxx"] + b["cxx"] + torch.outer(dx * weight, dx),
            "cyy": a["cyy"] + b["cyy"] + torch.outer(dy * weight, dy),
            "cxy": a["cxy"] + b["cxy"] + torch.outer(dx * weight, dy)}


_EIGS: dict[int, tuple[weakref.ref[Tensor], int, Tensor, Tensor]] = {}


def _eig(c: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix.

    Remembered per tensor object and version while the tensor lives (the entry goes with it): SVCCA and PWCCA share
    one moment state, so the second reuses the first's decompositions (the costliest step of ``compute``, O(C³)).
    """
    version = -1 if c.is_inference() else c._version  # inference tensors keep no version counter
    hit = _EIGS.get(id(c))
    if hit is not None and hit[0]() is c and hit[1] == version:
        return hit[2], hit[3]
    lam, vec = torch.linalg.eigh(c)
    lam, vec = lam.flip(0), vec.flip(1)
    key = id(c)
    _EIGS[key] = (weakref.ref(c, lambda _, key=key: _EIGS.pop(key, None)), version, lam, vec)  # gone with c
    return lam, vec


def _rank(lam: Tensor, tol: float) -> int:
    return int((lam > tol * lam[0]).sum()) if lam.numel() and lam[0] > 0 else 0


def _whiten(lam: Tensor, vec: Tensor, r: int) -> Tensor:
    """``(P, r)``: maps features to the first ``r`` principal directions scaled to unit variance."""
    return vec[:, :r] / lam[:r].sqrt()


def svcca_from_moments(m: Moments, keep: float = 0.99) -> dict[str, Tensor | int]:
    """SVCCA (Raghu et al. 2017) from :func:`moments`: per side, the fewest principal directions whose eigenvalues
    (variances) sum to at least ``keep`` of the total; then CCA between the two reduced representations.

    Returns ``{"svcca": mean canonical correlation, "correlations": (min(r, s),), "dims_base": r, "dims_tuned": s}``.
    """
    lx, vx = _eig(m["cxx"])
    ly, vy = _eig(m["cyy"])
    dims = []
    for lam in (lx, ly):
        pos = lam.clamp(min=0)
        total = pos.sum()
        r = int((pos.cumsum(0) < keep * total).sum()) + 1 if total > 0 else 0
        dims.append(min(r, _rank(lam, RANK_TOL)))
    r, s = dims
    if r == 0 or s == 0:
        return {"svcca": torch.tensor(float("nan"), dtype=torch.float64),
                "correlations": torch.zeros(0, dtype=torch.float64), "dims_base": r, "dims_tuned": s}
    rho = torch.linalg.svdvals(_whiten(lx, vx, r).T @ m["cxy"] @ _whiten(ly, vy, s))
    return {"svcca": rho.mean(), "correlations": rho, "dims_base": r, "dims_tuned": s}


def pwcca_from_moments(m: Moments, rank_tol: float = RANK_TOL) -> dict[str, Tensor | int | str]:
    """PWCCA (Morcos et al. 2018) from :func:`moments`: CCA on all directions with variance (eigenvalues above
    ``rank_tol`` × the largest), then the canonical correlations ``ρ_i`` averaged with weights
    ``α_i ∝ Σ_j |⟨h_i, x̃_j⟩|``, where ``h_i`` are the unit-norm canonical variates of one side and ``x̃_j`` that
    side's centred neurons. The side is the one of lower rank (the base on a tie), as in the authors' code.

    Returns ``{"pwcca", "correlations", "weights", "weights_from", "rank_base", "rank_tuned"}``.
    """
    lx, vx = _eig(m["cxx"])
    ly, vy = _eig(m["cyy"])
    rx, ry = _rank(lx, rank_tol), _rank(ly, rank_tol)
    side = "base" if rx <= ry else "tuned"
    if rx == 0 or ry == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return {"pwcca": torch.tensor(float("nan"), dtype=torch.float64), "correlations": empty, "weights": empty,
                "weights_from": side, "rank_base": rx, "rank_tuned": ry}
    u, rho, vh = torch.linalg.svd(_whiten(lx, vx, rx).T @ m["cxy"] @ _whiten(ly, vy, ry), full_matrices=False)
    # ⟨h_i, x̃_j⟩ = (Cxx a_i)_j with a_i = Kx u_i, which is (V_r Λ_r^½ u_i)_j
    if side == "base":
        loadings = (vx[:, :rx] * lx[:rx].sqrt()) @ u
    else:
        loadings = (vy[:, :ry] * ly[:ry].sqrt()) @ vh.T
    alpha = loadings.abs().sum(dim=0)
    weights = alpha / alpha.sum()
    return {"pwcca": (weights * rho).sum(), "correlations": rho, "weights": weights, "weights_from": side,
            "rank_base": rx, "rank_tuned": ry}


def procrustes_from_moments(m: Moments) -> Tensor:
    """Orthogonal Procrustes distance (Ding et al. 2021) of the centred features, each scaled to unit Frobenius norm:
    ``min_R ‖X̂ − ŶR‖²_F = 2 − 2‖X̂ᵀŶ‖_*`` (0 for identical representations, at most 2)."""
    scale = (m["cxx"].trace() * m["cyy"].trace()).sqrt()
    return 2.0 - 2.0 * torch.linalg.svdvals(m["cxy"]).sum() / scale


def svcca(x: Tensor, y: Tensor, keep: float = 0.99) -> Tensor:
    """SVCCA of ``x`` ``(N, P)`` and ``y`` ``(N, Q)`` (see :func:`svcca_from_moments`).

    Example:
        >>> x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
        >>> round(svcca(x, 3 * x + 1).item(), 9)
        1.0
    """
    return svcca_from_moments(moments(x, y), keep)["svcca"]  # type: ignore[return-value]


def pwcca(x: Tensor, y: Tensor, rank_tol: float = RANK_TOL) -> Tensor:
    """PWCCA of ``x`` ``(N, P)`` and ``y`` ``(N, Q)`` (see :func:`pwcca_from_moments`)."""
    return pwcca_from_moments(moments(x, y), rank_tol)["pwcca"]  # type: ignore[return-value]


def procrustes(x: Tensor, y: Tensor) -> Tensor:
    """Orthogonal Procrustes distance of ``x`` ``(N, P)`` and ``y`` ``(N, Q)`` (see :func:`procrustes_from_moments`)."""
    return procrustes_from_moments(moments(x, y))


def _neighbours(feats: Tensor, k: int) -> Tensor:
    """``(N, k)``: each row's k nearest other rows by cosine similarity, ties to the lower row."""
    f = F.normalize(feats.to(torch.float64), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(float("-inf"))
    return torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]


def mutual_knn(x: Tensor, y: Tensor, k: int = 10) -> Tensor:
    """Mutual k-NN alignment (Huh et al. 2024): the mean, over samples, of the fraction of a sample's k nearest
    neighbours (cosine similarity of L2-normalised features, itself excluded, ties to the lower row) that are shared
    between ``x`` ``(N, P)`` and ``y`` ``(N, Q)``. Needs ``N > k``.

    Example:
        >>> x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
        >>> mutual_knn(x, 2 * x, k=5).item()
        1.0
    """
    n = x.shape[0]
    if y.shape[0] != n or k < 1 or n <= k:
        raise ValueError(f"mutual_knn needs x, y with the same N > k >= 1; got N={n}, {y.shape[0]} and k={k}")
    masks = [torch.zeros(n, n, dtype=torch.bool, device=x.device).scatter_(1, _neighbours(f, k), True) for f in (x, y)]
    return (masks[0] & masks[1]).sum(dim=1).to(torch.float64).mean() / k
