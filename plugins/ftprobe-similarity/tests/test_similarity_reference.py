"""The four metrics against independent float64 numpy references on the full matrices (SVD / QR based CCA,
scipy's orthogonal Procrustes, brute-force neighbour sets), streamed and in one shot; invariances; edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from ftprobe import Activation, PairStep, RunContext
from ftprobe.core.errors import MetricNeedsError

from ftprobe_similarity.functional import mutual_knn, procrustes, pwcca, svcca
from ftprobe_similarity.metrics import PWCCA, SVCCA, MutualKNN, Procrustes

# ------------------------------------------------------------------------------------------------ numpy references


def _centre(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0)


def _basis(a: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis of the column space of the centred matrix (SVD rank-revealing, scipy)."""
    return scipy.linalg.orth(_centre(a), rcond=tol)


def svcca_ref(x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> float:
    reduced = []
    for a in (x, y):
        u, s, _ = np.linalg.svd(_centre(a), full_matrices=False)
        var = s**2
        r = int(np.searchsorted(np.cumsum(var), keep * var.sum() * (1 - 1e-12))) + 1
        reduced.append(u[:, :r] * s[:r])  # the data projected on its first r principal directions
    qx, _ = np.linalg.qr(reduced[0])
    qy, _ = np.linalg.qr(reduced[1])
    return float(np.linalg.svd(qx.T @ qy, compute_uv=False).mean())


def pwcca_ref(x: np.ndarray, y: np.ndarray) -> float:
    qx, qy = _basis(x), _basis(y)
    u, rho, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    if qx.shape[1] <= qy.shape[1]:
        variates, neurons = qx @ u, _centre(x)  # unit-norm canonical variates of x, (N, k)
    else:
        variates, neurons = qy @ vt.T, _centre(y)
    alpha = np.abs(variates.T @ neurons).sum(axis=1)
    return float((alpha / alpha.sum()) @ rho)


def procrustes_ref(x: np.ndarray, y: np.ndarray) -> float:
    a, b = _centre(x), _centre(y)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    if a.shape[1] != b.shape[1]:  # scipy wants equal widths: zero-pad (the distance is unchanged)
        w = max(a.shape[1], b.shape[1])
        a, b = np.pad(a, ((0, 0), (0, w - a.shape[1]))), np.pad(b, ((0, 0), (0, w - b.shape[1])))
    r, _ = scipy.linalg.orthogonal_procrustes(b, a)
    return float(np.linalg.norm(a - b @ r) ** 2)


def mutual_knn_ref(x: np.ndarray, y: np.ndarray, k: int) -> float:
    def neighbours(a: np.ndarray) -> list[set[int]]:
        f = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
        sim = f @ f.T
        out = []
        for i in range(len(a)):
            ranked = sorted((j for j in range(len(a)) if j != i), key=lambda j: (-sim[i, j], j))
            out.append(set(ranked[:k]))
        return out

    return float(np.mean([len(p & q) / k for p, q in zip(neighbours(x), neighbours(y))]))


# ------------------------------------------------------------------------------------------------ data and feeding


def _pair(n: int, p: int, q: int, seed: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Post-ReLU-like features with shared structure: y is a noisy nonlinear map of x."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((n, p)) @ (np.eye(p) + 0.5 * rng.standard_normal((p, p))), 0) + offset
    y = np.tanh(x @ rng.standard_normal((p, q)) / np.sqrt(p)) + 0.3 * rng.standard_normal((n, q)) + offset
    return x, y


def _stream(metric, x: np.ndarray, y: np.ndarray, sizes: list[int], index: np.ndarray | None = None):
    index = np.arange(len(x)) if index is None else index
    metric.setup(RunContext(layers=("l",), shapes={"l": (x.shape[1],)}, num_samples=len(x)))
    lo = 0
    for size in sizes:
        sl = slice(lo, lo + size)
        xb, yb = torch.from_numpy(x[sl]).float(), torch.from_numpy(y[sl]).float()
        metric.update(PairStep("l", Activation("l", {"gap": xb}), Activation("l", {"gap": yb}),
                               torch.from_numpy(index[sl])))
        lo += size
    assert lo == len(x)
    return metric.compute()


SHAPES = [pytest.param(300, 8, 8, id="n300-8x8"), pytest.param(200, 12, 5, id="n200-12x5"),
          pytest.param(90, 16, 16, id="n90-16x16")]


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(("n", "p", "q"), SHAPES)
def test_functional_matches_numpy_reference(n: int, p: int, q: int) -> None:
    x, y = _pair(n, p, q, seed=n + p)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert svcca(tx, ty).item() == pytest.approx(svcca_ref(x, y), abs=1e-10)
    assert pwcca(tx, ty).item() == pytest.approx(pwcca_ref(x, y), abs=1e-10)
    assert procrustes(tx, ty).item() == pytest.approx(procrustes_ref(x, y), abs=1e-10)
    assert mutual_knn(tx, ty, k=10).item() == pytest.approx(mutual_knn_ref(x, y, 10), abs=1e-12)


@pytest.mark.parametrize(("n", "p", "q"), SHAPES)
def test_streamed_metrics_match_reference(n: int, p: int, q: int) -> None:
    x, y = _float32(*_pair(n, p, q, seed=7 * n + q))
    sizes = [32] * (n // 32) + ([n % 32] if n % 32 else [])
    sv = _stream(SVCCA(), x, y, sizes)
    assert sv["svcca"].item() == pytest.approx(svcca_ref(x, y), abs=1e-9)
    assert sv["n"] == n and sv["dims_base"] <= p and sv["dims_tuned"] <= q
    assert _stream(PWCCA(), x, y, sizes)["pwcca"].item() == pytest.approx(pwcca_ref(x, y), abs=1e-9)
    assert _stream(Procrustes(), x, y, sizes)["procrustes"].item() == pytest.approx(procrustes_ref(x, y), abs=1e-9)
    assert _stream(MutualKNN(k=5), x, y, sizes)["mutual_knn"].item() == pytest.approx(mutual_knn_ref(x, y, 5))


def _float32(*arrays: np.ndarray) -> list[np.ndarray]:
    """The values float32 activation views hold, as float64 (what the references must see)."""
    return [a.astype(np.float32).astype(np.float64) for a in arrays]


def test_large_feature_means_do_not_cancel_digits() -> None:
    # features around 1e6 with unit spread: raw float64 sums (ΣxxᵀΣ − nμμᵀ) give SVCCA off by 3e-3 here (measured);
    # per-batch centred moments merged with Chan's update stay within 1e-11
    x, y = _float32(*_pair(256, 10, 10, seed=3, offset=1e6))
    sizes = [50, 50, 50, 50, 56]
    assert _stream(SVCCA(), x, y, sizes)["svcca"].item() == pytest.approx(svcca_ref(x, y), abs=1e-9)
    assert _stream(PWCCA(), x, y, sizes)["pwcca"].item() == pytest.approx(pwcca_ref(x, y), abs=1e-9)
    assert _stream(Procrustes(), x, y, sizes)["procrustes"].item() == pytest.approx(procrustes_ref(x, y), abs=1e-9)


def test_rank_deficient_features_match_reference() -> None:
    x, y = _float32(*_pair(120, 9, 9, seed=11))
    x[:, 0] = 0.0  # a dead channel
    x[:, 1] = 2 * x[:, 2]  # a duplicated direction
    y[:, 3] = 5.0  # a constant channel
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    out = _stream(PWCCA(), x, y, [40, 40, 40])
    assert (out["rank_base"], out["rank_tuned"], out["weights_from"]) == (7, 8, "base")
    assert out["pwcca"].item() == pytest.approx(pwcca_ref(x, y), abs=1e-9)
    assert svcca(tx, ty).item() == pytest.approx(svcca_ref(x, y), abs=1e-9)
    assert procrustes(tx, ty).item() == pytest.approx(procrustes_ref(x, y), abs=1e-10)


def test_invariances() -> None:
    x, y = _pair(200, 8, 8, seed=5)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    a = torch.randn(8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 3 * torch.eye(8)
    assert svcca(tx, 2.5 * ty @ q + 7).item() == pytest.approx(svcca(tx, ty).item(), abs=1e-10)
    assert procrustes(tx, 2.5 * ty @ q + 7).item() == pytest.approx(procrustes(tx, ty).item(), abs=1e-10)
    assert pwcca(tx, ty @ a).item() == pytest.approx(pwcca(tx, ty).item(), abs=1e-10)  # weights come from x
    scale = torch.rand(200, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    assert mutual_knn(tx, scale * ty @ q, 10).item() == pytest.approx(mutual_knn(tx, ty, 10).item(), abs=1e-12)
    for fn in (svcca, pwcca):
        assert fn(tx, 3 * tx - 1).item() == pytest.approx(1.0, abs=1e-10)
    assert procrustes(tx, tx @ q).item() == pytest.approx(0.0, abs=1e-12)


def test_mutual_knn_keeps_the_first_samples_by_index_in_any_order() -> None:
    x, y = _pair(40, 6, 6, seed=9)
    order = np.random.default_rng(0).permutation(40)  # the stream visits samples in a shuffled global order
    out = _stream(MutualKNN(k=3, max_samples=16), x[order], y[order], [7, 7, 7, 7, 7, 5], index=order)
    assert (out["n"], out["samples_seen"], out["max_samples"]) == (16, 40, 16)
    assert "first 16 of 40 samples" in out["note"]
    assert out["mutual_knn"].item() == pytest.approx(mutual_knn_ref(x[:16], y[:16], 3))


def test_degenerate_inputs_give_nan_with_a_reason() -> None:
    x, y = _pair(30, 4, 4, seed=1)
    for metric, key in ((SVCCA(), "svcca"), (PWCCA(), "pwcca"), (Procrustes(), "procrustes")):
        out = _stream(metric, np.full_like(x, 0.25), y, [30])
        assert np.isnan(float(out[key])) and "base features are constant" in out["note"]
    out = _stream(SVCCA(), x[:1], y[:1], [1])
    assert np.isnan(float(out["svcca"])) and "at least 2 samples" in out["note"]
    assert np.isnan(MutualKNN(k=3).compute()["mutual_knn"])
    few = _stream(SVCCA(), x[:6], y[:6], [6])
    assert "1 by construction" in few["note"]


def test_options_are_checked_with_a_fix() -> None:
    with pytest.raises(MetricNeedsError, match="keep must be in"):
        SVCCA(keep=1.5)
    with pytest.raises(MetricNeedsError, match="features='raw' is not an option"):
        PWCCA(features="raw")
    with pytest.raises(MetricNeedsError, match="raise max_samples"):
        MutualKNN(k=10, max_samples=10)
    with pytest.raises(MetricNeedsError, match="lower k"):
        MutualKNN(k=10).setup(RunContext(shapes={"l": (8, 4, 4)}, num_samples=8))
    big = RunContext(layers=("l",), shapes={"l": (512, 28, 28)})
    with pytest.raises(MetricNeedsError, match="use features='gap'"):
        SVCCA(features="flatten").setup(big)
    assert "MB per model pair" in SVCCA().setup(big)[0]


def test_moment_metrics_share_one_state() -> None:
    keys = {SVCCA().state_key(), PWCCA(rank_tol=1e-8).state_key(), Procrustes().state_key()}
    assert len(keys) == 1 and SVCCA(features="max").state_key() not in keys
    assert SVCCA().state_names == PWCCA().state_names == Procrustes().state_names == ("moments",)


def test_eigendecompositions_are_shared_while_the_state_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftprobe_similarity import functional as fn

    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda c: calls.append(c.shape) or eigh(c))
    x, y = (torch.from_numpy(a) for a in _pair(50, 6, 5, seed=2))
    m = fn.moments(x, y)
    first = fn.svcca_from_moments(m)["svcca"]
    fn.pwcca_from_moments(m)  # the same state (as the engine shares it): no new decomposition
    assert calls == [(6, 6), (5, 5)]
    m["cxx"].mul_(4.0)  # x scaled by 2, in place: the change is seen (the tensor's version moved), decomposed again
    m["cxy"].mul_(2.0)
    assert fn.svcca_from_moments(m)["svcca"].item() == pytest.approx(first.item(), abs=1e-12)
    assert calls == [(6, 6), (5, 5), (6, 6)]
    kept = id(m["cxx"]), id(m["cyy"])
    del m
    assert not set(kept) & set(fn._EIGS)  # nothing outlives the state it was computed from
