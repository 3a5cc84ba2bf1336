"""Numeric tests of the CKA functional twins: golden values, invariances, a numpy oracle, properties."""

from __future__ import annotations

import doctest
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

import ftprobe.functional._cka_grams as grams_module
import ftprobe.functional.cka as cka_module
from ftprobe.functional._cka_grams import _debiased_feature_cka, _gram_cosine, _gram_linear, _ucenter_gram
from ftprobe.functional.cka import (
    _linear_cka_compute,
    _linear_cka_merge,
    _linear_cka_update,
    hsic_unbiased,
    linear_cka,
    linear_cka_debiased,
    linear_cka_matrix,
    minibatch_cka,
    rbf_cka,
)

TESTS = Path(__file__).resolve().parents[1]


def _load_reference() -> ModuleType:
    # Loaded by path so the oracle imports the same way whatever the tests/ package layout is.
    spec = importlib.util.spec_from_file_location("_ftprobe_cka_numpy_oracle", TESTS / "reference" / "cka_numpy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()
GOLDEN = json.loads((TESTS / "golden" / "cka.json").read_text())


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _split(x: Tensor, sizes: tuple[int, ...] = (16, 16, 16, 12)) -> list[Tensor]:
    return list(x.split(list(sizes)))


def _minibatch(x: Tensor, y: Tensor) -> Tensor:
    sizes = (x.shape[0] // 3, x.shape[0] // 3, x.shape[0] - 2 * (x.shape[0] // 3))
    return minibatch_cka(_split(x, sizes), _split(y, sizes))


ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "linear": linear_cka,
    "linear-debiased": linear_cka_debiased,
    "rbf": lambda x, y: rbf_cka(x, y, threshold=0.5),
    "rbf-debiased": lambda x, y: rbf_cka(x, y, threshold=0.5, debiased=True),
    "minibatch": _minibatch,
}
SHAPES = [pytest.param(48, 6, id="n>p"), pytest.param(36, 50, id="p>n")]


# -- golden values -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "key"),
    [
        pytest.param(linear_cka, "linear", id="linear"),
        pytest.param(lambda x, y: rbf_cka(x, y, threshold=0.5), "rbf_0.5", id="rbf-0.5"),
        pytest.param(linear_cka_debiased, "linear_debiased", id="debiased"),
    ],
)
def test_google_notebook_golden_values(fn: Callable[[Tensor, Tensor], Tensor], key: str) -> None:
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    value = fn(torch.from_numpy(x), torch.from_numpy(y))
    assert value.dtype == torch.float64
    assert round(value.item(), 5) == GOLDEN["google_notebook"][key]


@pytest.mark.parametrize("key", sorted(GOLDEN["synthetic"]))
def test_synthetic_golden_values(key: str) -> None:
    x, y = (torch.from_numpy(a) for a in ref.golden_inputs())
    fns = {
        "linear": lambda: linear_cka(x, y),
        "linear_debiased": lambda: linear_cka_debiased(x, y),
        "rbf_0.5": lambda: rbf_cka(x, y, 0.5),
        "rbf_1.0": lambda: rbf_cka(x, y, 1.0),
        "rbf_0.5_debiased": lambda: rbf_cka(x, y, 0.5, debiased=True),
        "minibatch": lambda: minibatch_cka(_split(x, ref.GOLDEN_BATCHES), _split(y, ref.GOLDEN_BATCHES)),
    }
    assert fns[key]().item() == pytest.approx(GOLDEN["synthetic"][key], abs=1e-11)


def test_doctests_pass() -> None:
    result = doctest.testmod(cka_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


# -- invariances, symmetry, identity ----------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "p"), SHAPES)
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_identity_symmetry_and_invariances(name: str, n: int, p: int) -> None:
    cka = ESTIMATORS[name]
    x = _randn(n, p, seed=n + p)
    y = torch.tanh(x @ _randn(p, 7, seed=1)) + 0.5 * _randn(n, 7, seed=2)
    q, _ = torch.linalg.qr(_randn(p, p, seed=3))
    base = cka(x, y).item()
    assert abs(cka(x, x).item() - 1.0) < 1e-12
    assert abs(cka(x, 2.5 * x @ q - 7.0).item() - 1.0) < 1e-12
    assert cka(y, x).item() == pytest.approx(base, abs=1e-13)
    assert cka(x @ q, y).item() == pytest.approx(base, abs=1e-12), "orthogonal transform"
    assert cka(1e-3 * x, 40.0 * y).item() == pytest.approx(base, abs=1e-12), "isotropic scaling"
    assert cka(x + 1e3, y - 50.0).item() == pytest.approx(base, abs=1e-10), "translation"
    assert abs(base - 1.0) > 1e-3  # the transformed-pair checks above are not comparing 1 with 1


def test_anisotropic_scaling_changes_linear_cka() -> None:  # the invariance tests above can fail
    x = _randn(40, 5, seed=4)
    y = x + 0.3 * _randn(40, 5, seed=5)
    assert abs(linear_cka(x * torch.tensor([1.0, 1, 1, 1, 30]), y) - linear_cka(x, y)) > 1e-2


# -- the numpy oracle (Gram-matrix form) -------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "p"), [*SHAPES, pytest.param(6, 3, id="tiny")])
@pytest.mark.parametrize(
    ("ours", "oracle"),
    [
        pytest.param(linear_cka, ref.linear_cka, id="linear"),
        pytest.param(linear_cka_debiased, ref.linear_cka_debiased, id="debiased"),
        pytest.param(lambda x, y: rbf_cka(x, y, 0.5), lambda x, y: ref.rbf_cka(x, y, 0.5), id="rbf-0.5"),
        pytest.param(lambda x, y: rbf_cka(x, y, 2.0), lambda x, y: ref.rbf_cka(x, y, 2.0), id="rbf-2.0"),
        pytest.param(
            lambda x, y: rbf_cka(x, y, 0.5, debiased=True),
            lambda x, y: ref.cka_from_grams(ref.gram_rbf(x, 0.5), ref.gram_rbf(y, 0.5), debiased=True),
            id="rbf-debiased",
        ),
        pytest.param(
            lambda x, y: hsic_unbiased(x @ x.T, y @ y.T),
            lambda x, y: ref.hsic_unbiased(ref.gram_linear(x), ref.gram_linear(y)),
            id="hsic-unbiased",
        ),
    ],
)
def test_matches_numpy_oracle(ours: Callable, oracle: Callable, n: int, p: int) -> None:
    x = _randn(n, p, seed=10 * n + p)
    y = x[:, : max(1, p // 2)] ** 2 + 0.7 * _randn(n, max(1, p // 2), seed=7)
    expected = oracle(x.numpy(), y.numpy())
    assert ours(x, y).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("sizes", [(16, 16, 16), (16, 16, 9, 5), (4, 30, 7)], ids=["equal", "short-last", "mixed"])
def test_minibatch_matches_oracle_with_size_weights(sizes: tuple[int, ...]) -> None:
    x = _randn(sum(sizes), 8, seed=11)
    y = torch.relu(x @ _randn(8, 6, seed=12)) + 0.4 * _randn(sum(sizes), 6, seed=13)
    xb, yb = _split(x, sizes), _split(y, sizes)
    expected = ref.minibatch_cka([b.numpy() for b in xb], [b.numpy() for b in yb])
    assert minibatch_cka(xb, yb).item() == pytest.approx(expected, rel=1e-10)


def test_minibatch_with_equal_batches_is_nguyens_plain_average() -> None:
    x, y = _randn(48, 5, seed=14), _randn(48, 5, seed=15) + _randn(48, 5, seed=14)
    xb, yb = _split(x, (12,) * 4), _split(y, (12,) * 4)
    xy = sum(hsic_unbiased(a @ a.T, b @ b.T) for a, b in zip(xb, yb)) / 4
    xx = sum(hsic_unbiased(a @ a.T, a @ a.T) for a in xb) / 4
    yy = sum(hsic_unbiased(b @ b.T, b @ b.T) for b in yb) / 4
    assert minibatch_cka(xb, yb).item() == pytest.approx((xy / (xx * yy).sqrt()).item(), rel=1e-12)


@pytest.mark.parametrize(("n", "p"), [*SHAPES, pytest.param(20, 20, id="n=p")])
def test_feature_space_and_gram_forms_agree(n: int, p: int) -> None:
    x, y = _randn(n, p, seed=16), _randn(n, p + 3, seed=17)
    y[:, :p] += 2 * x
    m = _linear_cka_update(x, y)
    gram_linear = _gram_cosine(_gram_linear(x), _gram_linear(y))
    gram_debiased = _gram_cosine(_ucenter_gram(_gram_linear(x)), _ucenter_gram(_gram_linear(y)))
    assert _linear_cka_compute(m["cxx"], m["cyy"], m["cxy"]).item() == pytest.approx(gram_linear.item(), rel=1e-12)
    assert _debiased_feature_cka(x, y).item() == pytest.approx(gram_debiased.item(), rel=1e-10)


def test_gram_built_in_column_chunks_equals_one_product(monkeypatch: pytest.MonkeyPatch) -> None:
    x = (_randn(12, 50, seed=23) + 300.0).float()  # wide float32 with an offset: the flattened-conv-map case
    y = _randn(12, 41, seed=24).float() + x[:, :41]
    one_product = grams_module._gram_linear(x)
    expected = [ref.linear_cka(x.numpy(), y.numpy()), ref.rbf_cka(x.numpy(), y.numpy(), 0.5)]
    monkeypatch.setattr(grams_module, "_CHUNK_ELEMENTS", 12 * 7)  # 7 columns per chunk, the last one short
    torch.testing.assert_close(grams_module._gram_linear(x), one_product, rtol=1e-12, atol=1e-9)
    assert linear_cka(x, y).item() == pytest.approx(expected[0], rel=1e-9)
    assert rbf_cka(x, y, 0.5).item() == pytest.approx(expected[1], rel=1e-9)



@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunked", [False, True])
def test_in_place_centring_never_writes_into_the_callers_features(dtype: torch.dtype, chunked: bool,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Shifting and centring happen in place on a float64 copy; a float64 input must not be that copy.
    if chunked:
        monkeypatch.setattr(grams_module, "_CHUNK_ELEMENTS", 9 * 4)
    x, y = (_randn(9, 13, seed=31) + 50.0).to(dtype), (_randn(9, 11, seed=32) - 7.0).to(dtype)
    x0, y0 = x.clone(), y.clone()
    grams_module._gram_linear(x)
    grams_module._centred64(y)
    linear_cka(x, y), rbf_cka(x, y, 0.5), linear_cka_debiased(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)

# -- streamed moments ---------------------------------------------------------------------------------------------
def test_chan_merge_of_shards_equals_one_pass_in_any_grouping() -> None:
    x = _randn(70, 5, seed=18) * 3 + 1e3  # large mean: the merge must not cancel
    y = _randn(70, 4, seed=19) - 2e3
    whole = _linear_cka_update(x, y)
    parts = [_linear_cka_update(a, b) for a, b in zip(x.split([1, 20, 33, 16]), y.split([1, 20, 33, 16]))]
    left = _linear_cka_merge(_linear_cka_merge(_linear_cka_merge(parts[0], parts[1]), parts[2]), parts[3])
    tree = _linear_cka_merge(_linear_cka_merge(parts[0], parts[1]), _linear_cka_merge(parts[2], parts[3]))
    for merged in (left, tree):
        assert int(merged["n"]) == 70
        for key in ("mean_x", "mean_y", "cxx", "cyy", "cxy"):
            torch.testing.assert_close(merged[key], whole[key], rtol=1e-10, atol=1e-9)


def test_linear_cka_matrix_entries_are_pairwise_cka() -> None:
    xs = [_randn(30, w, seed=20 + w) for w in (2, 5, 3)]
    ys = [torch.sin(xs[0].sum(1, keepdim=True) * _randn(1, w, seed=30 + w)) + _randn(30, w, seed=40) for w in (4, 1)]
    matrix = linear_cka_matrix(xs, ys)
    assert matrix.shape == (3, 2)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            assert matrix[i, j].item() == pytest.approx(linear_cka(x, y).item(), rel=1e-12)


# -- degenerate input and errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_constant_features_give_nan_not_a_clamped_number(name: str) -> None:
    x = _randn(24, 4, seed=21)
    for value in (0.0, 0.1, 7.7):  # 0.1 and 7.7: a plain mean of their copies leaves rounding residue
        assert torch.isnan(ESTIMATORS[name](x, torch.full((24, 3), value, dtype=torch.float64)))
        assert torch.isnan(ESTIMATORS[name](torch.full((24, 5), value, dtype=torch.float32), x))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(lambda: linear_cka(torch.ones(5, 2, 2), torch.ones(5, 2)), "2-D features", id="3-d-input"),
        pytest.param(lambda: linear_cka(torch.ones(5, 2), torch.ones(6, 2)), "same number of samples", id="rows"),
        pytest.param(lambda: hsic_unbiased(torch.eye(3), torch.eye(3)), "at least 4 samples", id="hsic-n3"),
        pytest.param(lambda: minibatch_cka([torch.ones(3, 2)], [torch.ones(3, 2)]), "at least 4", id="minibatch-n3"),
        pytest.param(lambda: linear_cka_debiased(torch.ones(3, 2), torch.ones(3, 2)), "at least 4", id="debiased-n3"),
    ],
)
def test_bad_input_is_refused(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# -- properties ---------------------------------------------------------------------------------------------------
_matrices = st.integers(5, 16).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 3), elements=st.floats(-10, 10, allow_nan=False)),
        arrays(np.float64, (n, 4), elements=st.floats(-10, 10, allow_nan=False)),
    )
)


def _spread(a: np.ndarray) -> bool:
    return float(np.linalg.norm(a - a.mean(0))) > 1e-2


@settings(max_examples=40, deadline=None)
@given(_matrices)
def test_property_biased_linear_cka_in_unit_interval(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    assume(_spread(x) and _spread(y))
    value = linear_cka(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert -1e-12 <= value <= 1 + 1e-12


@settings(max_examples=40, deadline=None)
@given(_matrices)
def test_property_linear_cka_symmetric(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = (torch.from_numpy(a) for a in xy)
    assume(_spread(xy[0]) and _spread(xy[1]))
    assert linear_cka(x, y).item() == pytest.approx(linear_cka(y, x).item(), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(_matrices, st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_property_linear_cka_scale_invariant(xy: tuple[np.ndarray, np.ndarray], a: float, b: float) -> None:
    x, y = (torch.from_numpy(m) for m in xy)
    assume(_spread(xy[0]) and _spread(xy[1]))
    assert linear_cka(a * x, b * y).item() == pytest.approx(linear_cka(x, y).item(), abs=1e-9)
