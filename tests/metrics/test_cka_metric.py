"""Tests of the streaming ``cka`` metric class: streaming = one-shot, merge = sequential, state round trips, the
cross-layer matrix, setup() refusals, and agreement with torch-cka 0.21 for the minibatch estimator."""

from __future__ import annotations

import doctest
import importlib.util
import io
import json
import sys
import types
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.metric import Activation, Metric, PairStep, RunContext, Scope
from ftprobe.core.views import compute_views
from ftprobe.functional.cka import linear_cka, linear_cka_debiased, minibatch_cka, rbf_cka
from ftprobe.metrics.cka import CKA

TESTS = Path(__file__).resolve().parents[1]


def _load_oracle() -> types.ModuleType:
    # Loaded by path so the oracle imports the same way whatever the tests/ package layout is.
    spec = importlib.util.spec_from_file_location("_ftprobe_cka_numpy_oracle", TESTS / "reference" / "cka_numpy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = json.loads((TESTS / "golden" / "cka.json").read_text())
SIZES = (16, 16, 16, 10)  # uneven last batch, every batch usable by the minibatch estimator

CONFIGS = {
    "exact-gap": dict(),
    "exact-gap-cross": dict(cross=True),
    "exact-flatten": dict(features="flatten"),
    "rbf": dict(kernel="rbf", rbf_threshold=0.7),
    "debiased": dict(debiased=True),
    "minibatch": dict(estimator="minibatch"),
    "minibatch-flatten": dict(estimator="minibatch", features="flatten"),
}


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _acts(seed: int = 0, n: int = sum(SIZES), dtype: torch.dtype = torch.float64) -> tuple[dict, dict]:
    """Raw base/tuned activations of three layers: a conv map, a token output and a vector."""
    base = {"conv": _randn(n, 4, 3, 3, seed=seed), "tokens": _randn(n, 5, 3, seed=seed + 1),
            "vec": _randn(n, 6, seed=seed + 2)}
    tuned = {
        "conv": torch.relu(base["conv"] + 0.5 * _randn(n, 4, 3, 3, seed=seed + 3)),
        "tokens": base["tokens"].flip(-1) * 2 + _randn(n, 5, 3, seed=seed + 4),
        "vec": torch.tanh(base["vec"] @ _randn(6, 7, seed=seed + 5)),
    }
    return {k: v.to(dtype) for k, v in base.items()}, {k: v.to(dtype) for k, v in tuned.items()}


def _step(base: dict[str, Tensor], tuned: dict[str, Tensor], lo: int, hi: int) -> PairStep:
    views = ("gap", "flatten")
    return PairStep(
        layer=None,
        base={k: Activation(k, compute_views(v[lo:hi], views)) for k, v in base.items()},
        tuned={k: Activation(k, compute_views(v[lo:hi], views)) for k, v in tuned.items()},
        index=torch.arange(lo, hi),
    )


def _steps(base: dict, tuned: dict, sizes: Sequence[int] = SIZES) -> Iterator[PairStep]:
    lo = 0
    for size in sizes:
        yield _step(base, tuned, lo, lo + size)
        lo += size


def _run(metric: Metric, steps: Iterator[PairStep] | list[PairStep]) -> Metric:
    for step in steps:
        metric.update(step)
    return metric


def _feat(x: Tensor, features: str) -> Tensor:
    return compute_views(x, [features])[features]


def _one_shot(opts: dict[str, Any], x: Tensor, y: Tensor, sizes: Sequence[int] = SIZES) -> Tensor:
    """The functional twin of a configuration, on all the data at once."""
    x, y = _feat(x, opts.get("features", "gap")), _feat(y, opts.get("features", "gap"))
    if opts.get("estimator") == "minibatch":
        return minibatch_cka(x.split(list(sizes)), y.split(list(sizes)))
    if opts.get("kernel") == "rbf":
        return rbf_cka(x, y, opts["rbf_threshold"], debiased=opts.get("debiased", False))
    return linear_cka_debiased(x, y) if opts.get("debiased") else linear_cka(x, y)


def _values(result: dict[str, Any]) -> dict[str, float]:
    return {k: v["cka"].item() for k, v in result.items() if k != "*"}


def _assert_same_result(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-12) -> None:
    assert _values(a) == pytest.approx(_values(b), abs=tol)
    assert {k: v["n"] for k, v in a.items() if k != "*"} == {k: v["n"] for k, v in b.items() if k != "*"}
    if "cka_cross" in a["*"]:
        torch.testing.assert_close(a["*"]["cka_cross"], b["*"]["cka_cross"], atol=tol, rtol=0)


# -- the class against its functional twin ----------------------------------------------------------------------
@pytest.mark.parametrize("config", list(CONFIGS))
def test_streaming_equals_one_shot(config: str) -> None:
    opts = CONFIGS[config]
    base, tuned = _acts()
    result = _run(CKA(**opts), _steps(base, tuned)).compute()
    assert list(result) == ["conv", "tokens", "vec", "*"]
    for layer in base:
        assert result[layer]["cka"].dtype == torch.float64
        expected = _one_shot(opts, base[layer], tuned[layer]).item()
        assert result[layer]["cka"].item() == pytest.approx(expected, abs=1e-12)
        assert result[layer]["n"] == sum(SIZES)
        assert "note" not in result[layer]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_identical_and_affinely_related_models_give_one(config: str) -> None:
    base, _ = _acts(seed=3)
    q3, q4, q6 = (torch.linalg.qr(_randn(c, c, seed=c))[0] for c in (3, 4, 6))
    rotated = {  # an orthogonal map of each layer's channel axis (orthogonal on the flattened units too)
        "conv": torch.einsum("nchw,cd->ndhw", base["conv"], q4), "tokens": base["tokens"] @ q3, "vec": base["vec"] @ q6}
    for tuned in (base, {k: 3.0 * v - 2.0 for k, v in base.items()}, rotated):
        values = _values(_run(CKA(**CONFIGS[config]), _steps(base, tuned)).compute())
        assert values == pytest.approx(dict.fromkeys(base, 1.0), abs=1e-12)


def test_golden_values_through_the_class() -> None:
    oracle = _load_oracle()
    x, y = (torch.from_numpy(a) for a in oracle.golden_inputs())
    cases = {"linear": {}, "linear_debiased": dict(debiased=True), "rbf_0.5": dict(kernel="rbf"),
             "rbf_0.5_debiased": dict(kernel="rbf", debiased=True), "minibatch": dict(estimator="minibatch")}
    for key, opts in cases.items():
        metric = _run(CKA(**opts), _steps({"l": x}, {"l": y}, oracle.GOLDEN_BATCHES))
        assert metric.compute()["l"]["cka"].item() == pytest.approx(GOLDEN["synthetic"][key], abs=1e-11), key


def test_float32_activations_with_a_large_offset_keep_their_value() -> None:
    x = _randn(512, 64, seed=5)
    y = x + 0.5 * _randn(512, 64, seed=6)
    truth = linear_cka(x, y).item()  # float64, no offset
    x32, y32 = (x + 1e3).float(), (y + 1e3).float()
    for opts in ({}, dict(estimator="minibatch")):
        result = _run(CKA(**opts), _steps({"l": x32}, {"l": y32}, (64,) * 8)).compute()["l"]["cka"].item()
        reference = linear_cka(x, y) if not opts else minibatch_cka(x.split(64), y.split(64))
        assert result == pytest.approx(reference.item(), abs=1e-6)  # only the float32 rounding of the inputs
    exact = _run(CKA(), _steps({"l": x32}, {"l": y32}, (64,) * 8)).compute()["l"]["cka"].item()
    assert exact == pytest.approx(linear_cka(x32.double(), y32.double()).item(), abs=1e-12)
    # Centring the float32 Gram matrix instead (PEERS.md §6.1) is far off: the check above has teeth.
    gk, gl, h = x32 @ x32.T, y32 @ y32.T, torch.eye(512) - 1.0 / 512
    kc, lc = h @ gk @ h, h @ gl @ h
    assert abs((kc * lc).sum() / (kc.norm() * lc.norm()) - truth) > 1e-2


# -- state: merge, reset, checkpoint -----------------------------------------------------------------------------
@pytest.mark.parametrize("config", list(CONFIGS))
def test_merge_state_of_shards_equals_sequential_pass(config: str) -> None:
    base, tuned = _acts(seed=7)
    steps = list(_steps(base, tuned))
    sequential = _run(CKA(**CONFIGS[config]), steps).compute()
    first, second = _run(CKA(**CONFIGS[config]), steps[:1]), _run(CKA(**CONFIGS[config]), steps[1:])
    first.merge_state(second)
    _assert_same_result(first.compute(), sequential)
    empty = CKA(**CONFIGS[config])
    empty.merge_state(_run(CKA(**CONFIGS[config]), steps).state_dict())  # a fresh instance adopts a shard's state
    _assert_same_result(empty.compute(), sequential)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_reset_then_rerun_equals_fresh(config: str) -> None:
    base, tuned = _acts(seed=8)
    other_base, other_tuned = _acts(seed=9)
    metric = _run(CKA(**CONFIGS[config]), _steps(other_base, other_tuned))
    metric.reset()
    assert all(not v for v in metric.state_dict().values() if isinstance(v, dict))
    fresh = _run(CKA(**CONFIGS[config]), _steps(base, tuned)).compute()
    _assert_same_result(_run(metric, _steps(base, tuned)).compute(), fresh, tol=0.0)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_state_round_trips_through_torch_save_weights_only(config: str) -> None:
    base, tuned = _acts(seed=10)
    steps = list(_steps(base, tuned))
    sequential = _run(CKA(**CONFIGS[config]), steps).compute()
    buffer = io.BytesIO()
    torch.save(_run(CKA(**CONFIGS[config]), steps[:2]).state_dict(), buffer)
    buffer.seek(0)
    resumed = CKA(**CONFIGS[config])
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _assert_same_result(_run(resumed, steps[2:]).compute(), sequential)


def test_state_of_the_default_path_does_not_grow_with_samples() -> None:
    base, tuned = _acts(seed=11, n=200)

    def sizes(metric):
        return sum(t.numel() for s in metric.state_dict()["moments"]["stats"].values() for t in s.values())

    one = _run(CKA(), _steps(base, tuned, (20,)))
    many = _run(CKA(), _steps(base, tuned, (20,) * 10))
    widths = ((4, 4), (3, 3), (6, 7))  # (base, tuned) gap widths of conv, tokens, vec
    assert sizes(one) == sizes(many) == sum(p * p + q * q + p * q + p + q + 1 for p, q in widths)


# -- cross-layer matrix -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["exact-gap", "exact-flatten", "rbf", "debiased", "minibatch"])
def test_cross_matrix_diagonal_and_entries(config: str) -> None:
    opts = {**CONFIGS[config], "cross": True}
    base, tuned = _acts(seed=12)
    result = _run(CKA(**opts), _steps(base, tuned)).compute()
    layers = result["*"]["layers"]
    matrix = result["*"]["cka_cross"]
    assert layers == ["conv", "tokens", "vec"] and matrix.shape == (3, 3) and matrix.dtype == torch.float64
    torch.testing.assert_close(matrix.diagonal(), torch.stack([result[k]["cka"] for k in layers]), atol=1e-12, rtol=0)
    for i, row in enumerate(layers):
        for j, col in enumerate(layers):
            expected = _one_shot(opts, base[row], tuned[col]).item()
            assert matrix[i, j].item() == pytest.approx(expected, abs=1e-12), (row, col)


def test_cross_false_reports_no_matrix_and_keeps_per_layer_blocks_only() -> None:
    base, tuned = _acts(seed=13)
    metric = _run(CKA(), _steps(base, tuned))
    assert "cka_cross" not in metric.compute()["*"]
    assert list(metric.state_dict()["moments"]["stats"]) == ["conv", "tokens", "vec"]
    assert metric.state_dict()["moments"]["stats"]["vec"]["cxy"].shape == (6, 7)


# -- minibatch: short batches, weights ----------------------------------------------------------------------------
def test_minibatch_skips_counts_and_reports_a_short_final_batch() -> None:
    base, tuned = _acts(seed=14, n=19)
    result = _run(CKA(estimator="minibatch"), _steps(base, tuned, (8, 8, 3))).compute()
    star = result["*"]
    assert (star["batches"], star["batches_skipped"], star["samples_skipped"]) == (2, 1, 3)
    assert "fewer than 4 samples" in star["note"]
    for layer in base:
        assert result[layer]["n"] == 16
        expected = _one_shot(CKA(estimator="minibatch").options(), base[layer][:16], tuned[layer][:16], (8, 8))
        assert result[layer]["cka"].item() == pytest.approx(expected.item(), abs=1e-12)


def test_minibatch_short_but_usable_batch_counts_for_its_size() -> None:
    base, tuned = _acts(seed=15, n=37)
    result = _run(CKA(estimator="minibatch"), _steps(base, tuned, (16, 16, 5))).compute()
    assert result["*"]["batches_skipped"] == 0 and result["vec"]["n"] == 37
    x, y = _feat(base["vec"], "gap"), _feat(tuned["vec"], "gap")
    plain_average = minibatch_cka(x[:32].split(16), y[:32].split(16))  # sanity: the 5-sample batch matters
    weighted = minibatch_cka(x.split([16, 16, 5]), y.split([16, 16, 5]))
    assert result["vec"]["cka"].item() == pytest.approx(weighted.item(), abs=1e-12)
    assert abs(result["vec"]["cka"].item() - plain_average.item()) > 1e-6


def test_minibatch_with_only_short_batches_gives_nan_and_says_why() -> None:
    base, tuned = _acts(seed=16, n=6)
    result = _run(CKA(estimator="minibatch"), _steps(base, tuned, (3, 3))).compute()
    assert torch.isnan(result["vec"]["cka"]) and result["vec"]["n"] == 0
    assert "no batch had at least 4 samples" in result["vec"]["note"]


# -- setup(): refusals and notes ----------------------------------------------------------------------------------
def test_setup_refuses_minibatch_with_batches_of_three() -> None:
    with pytest.raises(MetricNeedsError, match=r"at least 4 samples per batch.*batch size is 3.*4 or more"):
        CKA(estimator="minibatch").setup(RunContext(layers=("l",), shapes={"l": (8, 4, 4)}, batch_size=3))


def test_setup_refuses_exact_flatten_over_budget_with_the_estimate() -> None:
    ctx = RunContext(layers=("mixed4d",), shapes={"mixed4d": (528, 14, 14)}, batch_size=32, num_samples=20_000)
    with pytest.raises(MetricNeedsError) as info:
        CKA(features="flatten").setup(ctx)
    message = str(info.value)
    assert "20000 samples × 2 models × 103488 features × 4 bytes = 16.6 GB" in message
    assert "max_memory_gb=4.0" in message and "features='gap'" in message and "estimator='minibatch'" in message
    assert CKA(features="flatten", max_memory_gb=64).setup(ctx)[0].startswith("exact, linear, flatten features: keeps")


@pytest.mark.parametrize(
    ("opts", "ctx", "expected"),
    [
        pytest.param({}, RunContext(layers=("l",), shapes={"l": (512, 7, 7)}), "streamed float64 moments",
                     id="default"),
        pytest.param(dict(kernel="rbf"), RunContext(layers=("l",), shapes={"l": (64,)}), "unknown", id="no-length"),
        pytest.param(dict(estimator="minibatch"), RunContext(layers=("l",), shapes={"l": (64,)}, batch_size=32),
                     "minibatch HSIC", id="minibatch"),
        pytest.param({}, RunContext(layers=("l",)), "unknown", id="no-shapes"),
    ],
)
def test_setup_returns_a_memory_note(opts: dict, ctx: RunContext, expected: str) -> None:
    notes = CKA(**opts).setup(ctx)
    assert len(notes) == 1 and expected in notes[0]


def test_setup_refuses_a_cross_matrix_over_budget() -> None:
    shapes = {f"l{i}": (4096,) for i in range(8)}
    with pytest.raises(MetricNeedsError, match="cross=False"):
        CKA(cross=True).setup(RunContext(layers=tuple(shapes), shapes=shapes, num_samples=100))


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        pytest.param(dict(features="pool"), "features='pool' is not an option", id="features"),
        pytest.param(dict(estimator="approx"), "estimator='approx'", id="estimator"),
        pytest.param(dict(kernel="poly"), "kernel='poly'", id="kernel"),
        pytest.param(dict(estimator="minibatch", kernel="rbf"), "needs estimator='exact'", id="minibatch-rbf"),
        pytest.param(dict(estimator="minibatch", debiased=True), "drop debiased=True", id="minibatch-debiased"),
        pytest.param(dict(kernel="rbf", rbf_threshold=0.0), "rbf_threshold must be a positive", id="threshold"),
        pytest.param(dict(max_memory_gb=-1), "max_memory_gb must be a positive", id="budget"),
    ],
)
def test_bad_options_are_refused_with_a_fix(opts: dict, match: str) -> None:
    with pytest.raises(MetricNeedsError, match=match):
        CKA(**opts)


def test_class_doctest_passes() -> None:
    import ftprobe.metrics.cka as module

    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0


# -- contract details ---------------------------------------------------------------------------------------------
def test_declared_metadata_and_entry_point() -> None:
    assert (CKA.name, CKA.scope, CKA.layerwise, CKA.higher_is_more_similar) == ("cka", Scope.PAIR, False, True)
    (ep,) = [ep for ep in entry_points(group="ftprobe.metrics") if ep.name == "cka"]
    assert ep.load() is CKA
    assert CKA(kernel="rbf", cross=True).options() == dict(
        features="gap", estimator="exact", kernel="rbf", rbf_threshold=0.5, debiased=False, cross=True,
        max_memory_gb=4.0)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_views_are_exactly_what_update_reads(config: str) -> None:
    metric = CKA(**CONFIGS[config])
    (view,) = metric.views()
    assert view == CONFIGS[config].get("features", "gap")
    base, tuned = _acts(seed=17, n=8)
    only = lambda acts: {k: Activation(k, compute_views(v, [view])) for k, v in acts.items()}  # noqa: E731
    metric.update(PairStep(None, only(base), only(tuned), torch.arange(8)))
    assert all(metric.compute()[k]["n"] == 8 for k in base)


def test_result_records_estimator_features_kernel_and_dtype() -> None:
    base, tuned = _acts(seed=18, dtype=torch.float32)
    star = _run(CKA(kernel="rbf", features="flatten"), _steps(base, tuned)).compute()["*"]
    assert {k: star[k] for k in ("estimator", "features", "kernel", "hsic", "dtype")} == dict(
        estimator="exact", features="flatten", kernel="rbf", hsic="biased", dtype="float64")
    assert "float32" in star["state"]
    assert _run(CKA(debiased=True), _steps(base, tuned)).compute()["*"]["hsic"] == "unbiased (debiased CKA)"
    assert _run(CKA(estimator="minibatch"), _steps(base, tuned)).compute()["*"]["hsic"] == "unbiased, per batch"


@pytest.mark.parametrize("config", list(CONFIGS))
def test_metadata_is_text_not_a_row_of_values(config: str) -> None:
    # the estimator's description is metadata: strings and lists, never a number that becomes a table row;
    # options (debiased, rbf_threshold ...) are recorded once, with the metric's options in the result
    base, tuned = _acts(seed=18)
    star = _run(CKA(**CONFIGS[config]), _steps(base, tuned)).compute()["*"]
    numbers = {k for k, v in star.items() if isinstance(v, (bool, int, float))}
    assert numbers <= {"batches", "batches_skipped", "samples_skipped"}, numbers  # minibatch counts are measured


def test_no_phantom_row_in_records_and_tables() -> None:
    import ftprobe
    from ftprobe.testing import TinyImages, tiny_pair

    base, tuned = tiny_pair()
    for opts in ({}, {"debiased": True}, {"kernel": "rbf"}, {"cross": True}):
        result = ftprobe.compare(base, tuned, data=TinyImages(n=12, size=16), layers=["mixed4a", "mixed5b"],
                                 metrics={"cka": opts}, batch_size=8, size=16, preprocess="none", device="cpu")
        rows = result.records()
        keys = ("cka", "n", "cka_shuffled") if opts in ({}, {"cross": True}) else ("cka", "n")  # moments path
        assert {(r["layer"], r["key"]) for r in rows} == {(lay, key) for lay in ("mixed4a", "mixed5b")
                                                          for key in keys}, opts
        assert result.get("cka", "*", "estimator") == "exact"


# -- too few samples for the estimator --------------------------------------------------------------------------
BIASED = ["exact-gap", "exact-gap-cross", "exact-flatten", "rbf"]


@pytest.mark.parametrize("config", BIASED)
@pytest.mark.parametrize("n", [1, 2])
def test_biased_cka_on_fewer_than_3_samples_is_nan_with_a_note(config: str, n: int) -> None:
    # two samples centred are x and -x: one direction, so biased CKA is 1 for any two models (one sample: 0 / 0)
    base, tuned = _acts(seed=30, n=n)
    result = _run(CKA(**CONFIGS[config]), _steps(base, tuned, (n,))).compute()
    for layer in base:
        assert torch.isnan(result[layer]["cka"]) and result[layer]["n"] == n
        assert f"{n} sample" in result[layer]["note"] and "at least 3" in result[layer]["note"]
    if "cka_cross" in result["*"]:
        assert torch.isnan(result["*"]["cka_cross"]).all()
    three = _run(CKA(**CONFIGS[config]), _steps(*_acts(seed=30, n=3), (3,))).compute()
    assert all(torch.isfinite(three[layer]["cka"]) and "note" not in three[layer] for layer in base)


@pytest.mark.parametrize("n", [2, 3])
def test_debiased_cka_on_fewer_than_4_samples_is_nan_with_a_note(n: int) -> None:
    base, tuned = _acts(seed=31, n=n)
    result = _run(CKA(debiased=True), _steps(base, tuned, (n,))).compute()
    for layer in base:
        assert torch.isnan(result[layer]["cka"]) and "at least 4" in result[layer]["note"]
    four = _run(CKA(debiased=True), _steps(*_acts(seed=31, n=4), (4,))).compute()
    assert all(torch.isfinite(four[layer]["cka"]) for layer in base)


@pytest.mark.parametrize("config", ["exact-gap", "rbf", "debiased"])
def test_unpaired_layers_on_too_few_samples_give_a_nan_matrix_with_a_note(config: str) -> None:
    base, tuned = _acts(seed=32, n=2)
    step = _step({k: base[k] for k in ("conv", "vec")}, {"tokens": tuned["tokens"]}, 0, 2)  # lists of other lengths
    star = _run(CKA(**CONFIGS[config]), [step]).compute()["*"]
    assert star["cka_cross"].shape == (2, 1) and torch.isnan(star["cka_cross"]).all()
    assert "not paired" in star["note"] and "NaN: 2 samples" in star["note"]


@pytest.mark.parametrize(("opts", "n", "needed"), [({}, 2, 3), ({"debiased": True}, 3, 4),
                                                   ({"estimator": "minibatch"}, 3, 4)])
def test_setup_cautions_when_the_data_is_too_small(opts: dict, n: int, needed: int) -> None:
    ctx = RunContext(layers=("l",), shapes={"l": (8, 4, 4)}, batch_size=32, num_samples=n)
    notes = " ".join(CKA(**opts).setup(ctx))
    assert f"{n} samples" in notes and f"at least {needed}" in notes and "NaN" in notes
    assert "at least" not in " ".join(CKA(**opts).setup(RunContext(layers=("l",), shapes={"l": (8, 4, 4)},
                                                                  batch_size=32, num_samples=needed)))


@pytest.mark.parametrize("config", ["exact-gap", "exact-gap-cross", "exact-flatten", "debiased", "minibatch"])
def test_constant_features_give_nan_with_a_note(config: str) -> None:
    base, tuned = _acts(seed=19)
    tuned = {**tuned, "vec": torch.full_like(tuned["vec"], 0.1)}  # 0.1: not exact in binary
    result = _run(CKA(**CONFIGS[config]), _steps(base, tuned)).compute()
    assert torch.isnan(result["vec"]["cka"])
    assert "tuned features are constant" in result["vec"]["note"]
    assert not torch.isnan(result["conv"]["cka"]) and "note" not in result["conv"]


def test_layerwise_steps_and_empty_batches_are_accepted() -> None:
    x, y = _randn(20, 3, seed=20), _randn(20, 3, seed=21)
    metric = CKA()
    metric.update(PairStep("l", Activation("l", {"gap": x}), Activation("l", {"gap": y}), torch.arange(20)))
    metric.update(PairStep("l", Activation("l", {"gap": x[:0]}), Activation("l", {"gap": y[:0]}), torch.arange(0)))
    assert metric.compute()["l"]["cka"].item() == pytest.approx(linear_cka(x, y).item(), abs=1e-14)


def test_compute_without_data_says_so() -> None:
    result = CKA().compute()
    assert list(result) == ["*"] and "no samples" in result["*"]["note"]


def test_merging_states_over_different_layers_fails_loudly() -> None:
    a = _run(CKA(), [_step({"a": _randn(8, 2, seed=1)}, {"a": _randn(8, 2, seed=2)}, 0, 8)])
    b = _run(CKA(), [_step({"b": _randn(8, 2, seed=1)}, {"b": _randn(8, 2, seed=2)}, 0, 8)])
    with pytest.raises(ValueError, match="different layers"):
        a.merge_state(b)


def test_state_key_shares_state_only_between_identical_accumulators() -> None:
    assert CKA(kernel="rbf").state_key() == CKA(debiased=True).state_key()  # both keep the same gap features
    assert CKA(estimator="minibatch").state_key() == CKA(estimator="minibatch", cross=True).state_key()
    assert CKA().state_key() != CKA(cross=True).state_key()
    assert CKA().state_key() != CKA(features="flatten").state_key()


# -- torch-cka 0.21 (minibatch CKA, float32) ---------------------------------------------------------------------
@pytest.fixture
def torch_cka_class(monkeypatch: pytest.MonkeyPatch) -> type:
    """torch-cka's ``CKA``; it imports matplotlib at import time only to plot, so stub it when it is absent."""
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        stubs = {name: types.ModuleType(name) for name in
                 ("matplotlib", "matplotlib.pyplot", "mpl_toolkits", "mpl_toolkits.axes_grid1")}
        stubs["mpl_toolkits"].axes_grid1 = stubs["mpl_toolkits.axes_grid1"]  # type: ignore[attr-defined]
        for name, module in stubs.items():
            monkeypatch.setitem(sys.modules, name, module)
        for name in [m for m in sys.modules if m == "torch_cka" or m.startswith("torch_cka.")]:
            monkeypatch.delitem(sys.modules, name)
    from torch_cka import CKA as TorchCKA

    return TorchCKA


def _tiny_model(seed: int) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def test_minibatch_matches_torch_cka(torch_cka_class: type) -> None:
    base, tuned = _tiny_model(0), _tiny_model(0)
    with torch.no_grad():
        for p, noise in zip(tuned.parameters(), _tiny_model(1).parameters()):
            p.add_(0.6 * noise)
    layers = ["0", "2", "4"]
    data = torch.utils.data.TensorDataset(_randn(96, 6, seed=22, dtype=torch.float32) + 0.3, torch.zeros(96))
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=False)  # same samples, same order for both

    peer = torch_cka_class(base, tuned, "base", "tuned", model1_layers=layers, model2_layers=layers, device="cpu")
    peer.compare(loader, loader)
    expected = peer.export()["CKA"].to(torch.float64)

    ours = CKA(estimator="minibatch", cross=True)
    for x, _ in loader:
        with torch.inference_mode():
            feats = [m(x) for m in (base[:1], base[:3], base[:5])], [m(x) for m in (tuned[:1], tuned[:3], tuned[:5])]
        ours.update(PairStep(None, *({n: Activation(n, {"gap": f}) for n, f in zip(layers, fs)} for fs in feats),
                             index=torch.arange(len(x))))
    result = ours.compute()
    assert expected.shape == (3, 3) and not torch.allclose(expected, torch.ones(3, 3, dtype=torch.float64), atol=0.05)
    # torch-cka works in float32 on uncentred Grams (difference seen: 6e-6); the exact estimator differs by ~0.04.
    torch.testing.assert_close(result["*"]["cka_cross"], expected, atol=5e-5, rtol=0)
