"""Property-based tests (hypothesis) of the functional metrics and of ``merge_state`` for every built-in metric.

Functional: invariances and bounds that any correct implementation has (orthogonal and isotropic transforms,
translations, class relabelling, batch order). Metrics: a stream of batches split at random into shards, each shard
updated on its own and the shards merged in a random order, gives the sequential pass's values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from ftprobe.core.metric import Activation, Metric, ModelStep, PairStep, RunContext, WeightStep
from ftprobe.core.registry import get_metric
from ftprobe.functional.cka import linear_cka, linear_cka_matrix, minibatch_cka
from ftprobe.functional.concentration import class_concentration, class_histogram, gini, normalized_entropy
from ftprobe.functional.topk import empty_state, finalize_topk, running_topk_update, topk_overlap, topk_sets
from ftprobe.functional.weight_change import (
    filter_relative_change,
    kernel_cosine,
    relative_l2_change,
    weight_l2_change,
)

PROPERTY = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def _randn(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(seed: int, p: int) -> Tensor:
    q, r = torch.linalg.qr(_randn(seed, p, p))
    return q * torch.sign(torch.diagonal(r))


# -- CKA -----------------------------------------------------------------------------------------------------------


@PROPERTY
@given(seeds, st.integers(3, 40), st.integers(1, 8), st.integers(1, 8), st.floats(1e-3, 1e3), st.floats(-1e3, 1e3))
def test_linear_cka_invariant_to_orthogonal_maps_scaling_and_shifts(seed, n, p, q, scale, shift) -> None:
    x, y = _randn(seed, n, p), _randn(seed + 1, n, q) + 0.5 * _randn(seed + 2, n, 1)
    value = linear_cka(x, y)
    assert -1e-12 <= value.item() <= 1 + 1e-12
    transformed = linear_cka(scale * x @ _orthogonal(seed + 3, p) + shift, y @ _orthogonal(seed + 4, q) - shift)
    assert transformed.item() == pytest.approx(value.item(), abs=1e-8)
    assert linear_cka(x, scale * x + shift).item() == pytest.approx(1.0, abs=1e-9)


@PROPERTY
@given(seeds, st.integers(2, 20), st.integers(1, 5))
def test_linear_cka_of_constant_features_is_nan_never_clamped(seed, n, p) -> None:
    x = _randn(seed, n, p)
    assert math.isnan(linear_cka(x, torch.full((n, 3), 7.0, dtype=torch.float64)).item())


@PROPERTY
@given(seeds, st.integers(4, 30), st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_cka_matrix_diagonal_is_the_per_layer_cka(seed, n, widths) -> None:
    xs = [_randn(seed + i, n, w) for i, w in enumerate(widths)]
    ys = [x @ _randn(seed + 10 + i, x.shape[1], 4) + _randn(seed + 20 + i, n, 4) for i, x in enumerate(xs)]
    diag = linear_cka_matrix(xs, ys).diagonal()
    torch.testing.assert_close(diag, torch.stack([linear_cka(x, y) for x, y in zip(xs, ys)]), rtol=1e-9, atol=1e-12)


@PROPERTY
@given(seeds, st.lists(st.integers(4, 12), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_minibatch_cka_bounded_and_independent_of_batch_order(seed, sizes, rnd) -> None:
    xb = [_randn(seed + i, n, 5) for i, n in enumerate(sizes)]
    yb = [x @ _randn(seed + 50, 5, 3) + _randn(seed + 100 + i, x.shape[0], 3) for i, x in enumerate(xb)]
    value = minibatch_cka(xb, yb).item()
    assert abs(value) <= 1 + 1e-9  # Cauchy–Schwarz over the summed U-centred Gram inner products
    order = list(range(len(sizes)))
    rnd.shuffle(order)
    assert minibatch_cka([xb[i] for i in order], [yb[i] for i in order]).item() == pytest.approx(value, abs=1e-12)


# -- top-k ---------------------------------------------------------------------------------------------------------


@st.composite
def _scores(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor, int]:
    n, c = draw(st.integers(1, 24)), draw(st.integers(1, 4))
    levels = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0])  # few levels: many ties, broken by index
    scores = torch.tensor(draw(st.lists(levels, min_size=n * c, max_size=n * c)), dtype=torch.float64).view(n, c)
    index = torch.randperm(3 * n, generator=torch.Generator().manual_seed(draw(seeds)))[:n]
    labels = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    return scores, index, labels, draw(st.integers(1, 6))


@PROPERTY
@given(_scores(), st.data())
def test_running_topk_over_any_batching_and_order_equals_one_shot(case, data) -> None:
    scores, index, labels, k = case
    n = scores.shape[0]
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    state = empty_state()
    for lo, hi in zip([0, *cuts], [*cuts, n]):
        part = perm[lo:hi]
        state = running_topk_update(state, scores[part], index[part], labels[part], k)
    got, want = finalize_topk(state, k), topk_sets(scores, index, k, labels=labels)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@PROPERTY
@given(_scores(), _scores())
def test_topk_overlap_symmetric_bounded_and_full_with_itself(a, b) -> None:
    k = a[3]
    ta, tb = topk_sets(a[0], a[1], k), topk_sets(b[0][:, :1].expand(-1, a[0].shape[1]), b[1], k)
    ov = topk_overlap(ta.index, tb.index, k)
    torch.testing.assert_close(ov, topk_overlap(tb.index, ta.index, k), rtol=0, atol=0, equal_nan=True)
    empty = ((ta.index < 0).all(dim=1) & (tb.index < 0).all(dim=1))
    assert bool(torch.isnan(ov).eq(empty).all()), "undefined (NaN) exactly where neither set has an image"
    assert bool(((ov[~empty] >= 0) & (ov[~empty] <= 100)).all())
    itself = topk_overlap(ta.index, ta.index, k)  # any set size, k larger than the data or not: 100
    alive = (ta.index >= 0).any(dim=1)
    assert itself[alive].tolist() == [100.0] * int(alive.sum()) and bool(itself[~alive].isnan().all())


# -- class concentration -------------------------------------------------------------------------------------------


@PROPERTY
@given(st.integers(2, 9), st.lists(st.lists(st.integers(-1, 8), min_size=1, max_size=12), min_size=1, max_size=4),
       st.permutations(range(9)), st.integers(1, 50))
def test_concentration_invariant_to_class_relabelling_and_counts_scale(num_classes, rows, perm, scale) -> None:
    width = max(len(r) for r in rows)
    lab = torch.tensor([[v % num_classes if v >= 0 else -1 for v in r] + [-1] * (width - len(r)) for r in rows])
    hist = class_histogram(lab, num_classes)
    assert hist.sum(dim=1).tolist() == (lab >= 0).sum(dim=1).to(torch.float64).tolist()
    relabel = torch.tensor([p for p in perm if p < num_classes])
    moved = class_histogram(torch.where(lab >= 0, relabel[lab.clamp(min=0)], lab), num_classes)
    for measure in (normalized_entropy, gini):
        torch.testing.assert_close(measure(moved), measure(hist), equal_nan=True)
        torch.testing.assert_close(measure(hist * scale), measure(hist), equal_nan=True)
    torch.testing.assert_close(class_concentration(lab, num_classes), normalized_entropy(hist), equal_nan=True)
    single = class_histogram(torch.zeros(1, 5, dtype=torch.int64), num_classes)
    assert normalized_entropy(single).item() == 0.0 and gini(single).item() == 0.0


# -- weight change -------------------------------------------------------------------------------------------------


@PROPERTY
@given(seeds, st.sampled_from([(4, 3, 3, 3), (6, 2, 1, 1), (5, 7)]), st.floats(0.01, 5.0))
def test_weight_change_norms_and_filter_ratios(seed, shape, a) -> None:
    b, d = _randn(seed, *shape), _randn(seed + 1, *shape)
    assert weight_l2_change(b, b).item() == 0.0
    assert weight_l2_change(b, b + d).item() == pytest.approx(torch.linalg.vector_norm(d).item(), rel=1e-12)
    assert weight_l2_change(b, b + d).item() == pytest.approx(weight_l2_change(b + d, b).item(), rel=1e-12)
    assert relative_l2_change(b, b + d).item() == pytest.approx(
        weight_l2_change(b, b + d).item() / torch.linalg.vector_norm(b).item(), rel=1e-12)
    torch.testing.assert_close(filter_relative_change(b, b * (1 + a)), torch.full((shape[0],), a, dtype=torch.float64))
    assert kernel_cosine(b, a * b).item() == pytest.approx(1.0, abs=1e-12)


# -- merge_state of every built-in metric --------------------------------------------------------------------------

LAYERS = ("l1", "l2")
WIDTHS = {"l1": 3, "l2": 5}
CONFIGS = [
    pytest.param("cka", {}, id="cka-exact"),
    pytest.param("cka", {"cross": True}, id="cka-cross"),
    pytest.param("cka", {"estimator": "minibatch"}, id="cka-minibatch"),
    pytest.param("cka", {"features": "flatten"}, id="cka-flatten-kept"),
    pytest.param("cka", {"kernel": "rbf"}, id="cka-rbf"),
    pytest.param("cka", {"debiased": True}, id="cka-debiased"),
    pytest.param("weight_l2", {}, id="weight_l2"),
    pytest.param("topk_overlap", {"k": 3}, id="topk-3"),
    pytest.param("topk_overlap", {"k": [2, "all"], "score": "max"}, id="topk-all-max"),
    pytest.param("class_concentration", {"k": 3}, id="concentration-entropy"),
    pytest.param("class_concentration", {"k": [1, 4], "measure": "gini"}, id="concentration-gini"),
]


def _views(t: Tensor) -> dict[str, Tensor]:
    return {"gap": t, "max": t, "flatten": t}


def _feed(metric: Metric, x: Tensor, y: Tensor, index: Tensor, labels: Tensor, layer: str) -> None:
    """Feed one batch to a metric of any kind: ``(N, C)`` features of ``layer`` to a model-scoped layerwise metric,
    or ``x``, ``y`` ``(N, ΣC)`` split into the layers of :data:`WIDTHS` to a pair-scoped cross-layer one."""
    if metric.layerwise and metric.scope.value == "model":
        metric.update(ModelStep(layer, Activation(layer, _views(x)), index, labels))
        return
    xs, ys = x.split(list(WIDTHS.values()), dim=1), y.split(list(WIDTHS.values()), dim=1)
    base = {name: Activation(name, _views(t)) for name, t in zip(LAYERS, xs)}
    tuned = {name: Activation(name, _views(t)) for name, t in zip(LAYERS, ys)}
    metric.update(PairStep(None, base, tuned, index, labels))


def _weights(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    tuned = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    return base, tuned


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.is_floating_point() or b.is_floating_point():
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-7, atol=1e-9, equal_nan=True, msg=where)
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, Mapping):
        assert set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-7, abs=1e-9), where
    else:
        assert a == b, where


@pytest.mark.parametrize(("name", "options"), CONFIGS)
@settings(max_examples=12, deadline=None)
@given(seed=seeds, sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6), data=st.data())
def test_merge_state_of_random_shards_in_random_order_equals_sequential(name, options, seed, sizes, data) -> None:
    cls = get_metric(name)
    shapes = {layer: (w,) for layer, w in WIDTHS.items()}
    ctx = RunContext(layers=LAYERS, shapes=shapes, num_samples=sum(sizes), has_labels=True,  # batches of 1-7
                     num_classes=3, classes=("a", "b", "c"))

    def fresh() -> Metric:
        metric = cls(**options)
        metric.setup(ctx)
        return metric

    shards = data.draw(st.integers(1, 4), label="shards")
    owner = data.draw(st.lists(st.integers(0, shards - 1), min_size=len(sizes), max_size=len(sizes)), label="owner")
    sequential, parts = fresh(), [fresh() for _ in range(shards)]
    if name == "weight_l2":
        step = WeightStep("l1", *_weights(seed))
        sequential.update(step)
        for i in set(owner):  # data-independent: every shard that saw the layer holds the same statistics
            parts[i].update(step)
    else:
        start = 0
        for b, n in enumerate(sizes):
            x = _randn(seed + b, n, sum(WIDTHS.values()))
            y = x + 0.5 * _randn(seed + 1000 + b, n, sum(WIDTHS.values()))
            index = torch.arange(start, start + n)
            labels = index % 3
            start += n
            for metric in (sequential, parts[owner[b]]):
                _feed(metric, x[:, :WIDTHS["l1"]] if metric.layerwise else x,
                      y[:, :WIDTHS["l1"]] if metric.layerwise else y, index, labels, "l1")
    order = data.draw(st.permutations(range(shards)), label="order")
    merged = parts[order[0]]
    for i in order[1:]:
        merged.merge_state(parts[i])
    _assert_same(merged.compute(), sequential.compute(), name)
    if cls.scope.value == "model":  # the per-pair values too (a model compared with itself)
        _assert_same(merged.compare(merged, merged), sequential.compare(sequential, sequential), name)


def test_every_builtin_metric_is_in_the_merge_configs() -> None:
    assert {p.values[0] for p in CONFIGS} == {"cka", "weight_l2", "topk_overlap", "class_concentration"}

