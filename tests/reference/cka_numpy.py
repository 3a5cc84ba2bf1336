"""An independent numpy float64 oracle for CKA, written in the Gram-matrix form.

Deliberately different from ``ftprobe.functional.cka`` (which works in feature space with streamed moments where it
can): every estimator here builds the n×n Gram matrices explicitly and centres them, following Kornblith et al.
(2019) and Google's ``representation_similarity/Demo.ipynb`` / ``efficient_CKA.py``; minibatch CKA follows
Nguyen et al. (2021) with each batch's HSIC_1 weighted by its sample count. Nothing here imports torch or ftprobe.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "GOLDEN_BATCHES",
    "center_gram",
    "cka_from_grams",
    "golden_inputs",
    "golden_values",
    "gram_linear",
    "gram_rbf",
    "hsic_unbiased",
    "linear_cka",
    "linear_cka_debiased",
    "minibatch_cka",
    "rbf_cka",
]


def gram_linear(x: np.ndarray) -> np.ndarray:
    """Linear kernel Gram matrix ``x xᵀ``: ``(n, p)`` → ``(n, n)`` (no centring)."""
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """RBF Gram matrix with bandwidth ``threshold² · median(squared distances)`` (Google's rule, median of the full
    n×n matrix including its zero diagonal, averaging the two middle values as ``np.median`` does)."""
    x = np.asarray(x, dtype=np.float64)
    diff = x[:, None, :] - x[None, :, :]
    sq_distances = np.einsum("ijk,ijk->ij", diff, diff)  # pairwise, not via the norm expansion
    sq_median = np.median(sq_distances)
    return np.exp(-sq_distances / (2.0 * threshold**2 * sq_median))


def center_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Double centring ``H K H`` (biased) or the Székely–Rizzo U-centring (unbiased, zero diagonal)."""
    k = np.array(gram, dtype=np.float64, copy=True)
    n = k.shape[0]
    if not unbiased:
        h = np.eye(n) - np.full((n, n), 1.0 / n)
        return h @ k @ h
    np.fill_diagonal(k, 0.0)
    row = k.sum(axis=1)
    total = k.sum()
    u = k - row[:, None] / (n - 2) - row[None, :] / (n - 2) + total / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 (the paper's name)
    """HSIC_1 of Song et al. (2012), eq. 5 (the form torch-cka uses; equal to the U-centred form)."""
    k = np.array(k, dtype=np.float64, copy=True)
    l = np.array(l, dtype=np.float64, copy=True)  # noqa: E741
    n = k.shape[0]
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones = np.ones(n)
    term1 = np.trace(k @ l)
    term2 = (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
    term3 = 2.0 * (ones @ k @ l @ ones) / (n - 2)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def cka_from_grams(k: np.ndarray, l: np.ndarray, debiased: bool = False) -> float:  # noqa: E741
    """CKA of two Gram matrices: centred (or U-centred) Grams, then a cosine."""
    kc = center_gram(k, unbiased=debiased)
    lc = center_gram(l, unbiased=debiased)
    return float(np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc)))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Exact linear CKA (biased HSIC) from the Gram matrices."""
    return cka_from_grams(gram_linear(x), gram_linear(y))


def linear_cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    """Exact linear CKA with the unbiased HSIC (U-centred Grams)."""
    return cka_from_grams(gram_linear(x), gram_linear(y), debiased=True)


def rbf_cka(x: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """Exact RBF CKA (biased HSIC)."""
    return cka_from_grams(gram_rbf(x, threshold), gram_rbf(y, threshold))


def minibatch_cka(x_batches: Sequence[np.ndarray], y_batches: Sequence[np.ndarray]) -> float:
    """Minibatch CKA (Nguyen et al. 2021), batch HSIC_1 values weighted by batch size w_i = n_i.

    ``Σ w_i HSIC_1(X_i, Y_i) / sqrt(Σ w_i HSIC_1(X_i, X_i) · Σ w_i HSIC_1(Y_i, Y_i))``.

    Uses Song's eq.-5 form of HSIC_1 on linear Grams (not the U-centring), weights w_i = n_i.
    """
    xy = xx = yy = 0.0
    for xb, yb in zip(x_batches, y_batches):
        n = xb.shape[0]
        k, l = gram_linear(xb), gram_linear(yb)  # noqa: E741
        xy += n * hsic_unbiased(k, l)
        xx += n * hsic_unbiased(k, k)
        yy += n * hsic_unbiased(l, l)
    return float(xy / np.sqrt(xx * yy))


def golden_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The seeded synthetic pair pinned in ``tests/golden/cka.json`` (numpy's legacy RandomState: stable)."""
    rs = np.random.RandomState(2020)
    x = rs.randn(60, 12)
    y = np.tanh(x @ rs.randn(12, 9)) + 0.3 * rs.randn(60, 9) + 5.0
    return x, y


GOLDEN_BATCHES = (16, 16, 16, 12)


def golden_values() -> dict[str, float]:
    """Every estimator on :func:`golden_inputs` (minibatch over :data:`GOLDEN_BATCHES`)."""
    x, y = golden_inputs()
    edges = np.cumsum((0, *GOLDEN_BATCHES))
    xb = [x[a:b] for a, b in zip(edges[:-1], edges[1:])]
    yb = [y[a:b] for a, b in zip(edges[:-1], edges[1:])]
    return {
        "linear": linear_cka(x, y),
        "linear_debiased": linear_cka_debiased(x, y),
        "rbf_0.5": rbf_cka(x, y, 0.5),
        "rbf_1.0": rbf_cka(x, y, 1.0),
        "rbf_0.5_debiased": cka_from_grams(gram_rbf(x, 0.5), gram_rbf(y, 0.5), debiased=True),
        "minibatch": minibatch_cka(xb, yb),
    }


if __name__ == "__main__":  # regenerate the "synthetic" block of tests/golden/cka.json
    import json

    print(json.dumps({k: round(v, 12) for k, v in golden_values().items()}, indent=2))
