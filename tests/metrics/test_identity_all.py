"""Identical models give each metric's identity (``Metric.identity``) for every installed metric, built-in or plugin.

A model compared with a copy of itself through ``ftprobe.compare`` must give exactly what the metric declares (CKA 1,
overlap 100 at every k, weight change 0, the same concentration for both models ...) at every option that changes
how the value is computed, on data sets from one image to more than k images. On tiny data a metric may have
nothing to measure: it then refuses (``MetricNeedsError`` with a fix, the metric being named) or gives NaN with a
``note`` saying why; a number is never wrong and never shown alone. A metric installed later and not listed below
runs with its default options, against its declared identity, or (none declared) equal per-model values for a
model-scoped metric and values that compute for a pair-scoped one (``test_contract_all`` requires the metrics ftprobe
knows to declare theirs).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

import ftprobe
from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.registry import get_metric, list_metrics
from ftprobe.testing import SAME, ContractSpec, TinyImages, tiny_pair
from ftprobe.testing.contract import check_identity
from ftprobe.testing.data import model_scoped

SIZES = (1, 2, 3, 5, 24)  # tiny, below every estimator's minimum, fewer images than k, and enough
LAYERS = ["mixed4a", "mixed5b"]

OPTIONS: dict[str, list[dict[str, Any]]] = {
    "cka": [{}, {"features": "flatten"}, {"kernel": "rbf"}, {"debiased": True}, {"cross": True},
            {"estimator": "minibatch"}, {"estimator": "minibatch", "features": "flatten", "cross": True}],
    "topk_overlap": [{"k": 1}, {"k": 4}, {"k": 100}, {"k": "all"}, {"k": [3, 24, 1000, "all"], "score": "max"},
                     {"k": 10, "positive_only": False}],
    "class_concentration": [{"k": 4}, {"k": 100}, {"k": [1, 30, "all"], "measure": "gini"},
                            {"k": 10, "score": "max", "positive_only": False}],
    "weight_l2": [{}, {"modules": "conv", "cosine": True}],
    "svcca": [{}, {"features": "max", "keep": 0.5}],
    "pwcca": [{}, {"features": "flatten"}],
    "procrustes": [{}, {"features": "max"}],
    "mutual_knn": [{}, {"k": 1}, {"k": 3, "features": "flatten"}],
}
CASES = [pytest.param(name, opts, id=f"{name}-{i}") for name in list_metrics()
         for i, opts in enumerate(OPTIONS.get(name, [{}]))]


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    base, _ = tiny_pair()
    return base, copy.deepcopy(base)


def _by_layer(result: ftprobe.Result, name: str, **match: str) -> dict[str, dict[str, Any]]:
    return {v.layer: {**v.scalars, **v.arrays} for v in result.values
            if v.metric == name and all(getattr(v, k) == x for k, x in match.items())}


@pytest.mark.parametrize(("name", "opts"), CASES)
def test_identical_models_give_the_identity(name: str, opts: dict[str, Any], models) -> None:
    cls = get_metric(name)
    spec = ContractSpec(cls, opts)
    if spec.expected_identity is None:  # not declared (a third-party metric): what any metric must give
        spec = ContractSpec(cls, opts, {"*": SAME} if model_scoped(cls) else {})
    exact = 0
    for n in SIZES:
        where = f"{name}({opts}) on {n} image(s)"
        try:
            result = ftprobe.compare(*models, labels=["base", "twin"], data=TinyImages(n=n, size=16), layers=LAYERS,
                                     metrics={name: opts}, batch_size=4, size=16, preprocess="none", device="cpu")
        except MetricNeedsError as err:  # the metric is named, so a refusal is right, if it says what to do
            assert n < 24, f"{where}: refused data a metric must handle: {err}"
            assert any(w in str(err) for w in ("use", "lower", "raise", "pass", "drop")), f"{where}: no fix in {err}"
            continue
        pair = _by_layer(result, name, scope="pair")
        models_values = None
        if model_scoped(cls):
            models_values = (_by_layer(result, name, model="base"), _by_layer(result, name, model="twin"))
        check_identity(spec, pair, models_values, where, undefined_ok=n < 24)
        for layer, values in pair.items():  # a value that is not a number is never shown without a word
            if any(isinstance(x, float) and math.isnan(x) for x in values.values()):
                assert isinstance(values.get("note"), str) and values["note"], f"{where} at {layer}: NaN, no note"
        exact += n == 24
    assert exact, f"{name}({opts}): no run on 24 images gave values"


def test_top_k_larger_than_the_data_is_the_identity_and_says_so(models) -> None:
    # the case a new user met: k=100 on a couple of dozen images, a model against itself
    result = ftprobe.compare(*models, data=TinyImages(n=24, size=16), layers=LAYERS, batch_size=8, size=16,
                             metrics={"topk_overlap": {"k": [24, 100, 1000]}}, preprocess="none", device="cpu")
    for layer in LAYERS:
        for k in (24, 100, 1000):
            assert result.get("topk_overlap", layer, f"overlap_mean@{k}") == 100.0
        assert result.get("topk_overlap", layer, "k_used_max@1000") <= 24
        assert "k=1000:" in result.get("topk_overlap", layer, "note")
    notes = " ".join(result.metrics["topk_overlap"]["notes"])
    assert "k=100 and k=1000 are more than the 24 images" in notes


# -- the check itself can fail -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "undefined_ok", "fails"),
    [
        pytest.param({"v": [1.0, math.nan]}, False, True, id="nan-without-a-note"),
        pytest.param({"v": [1.0, math.nan], "note": "one channel is dead"}, False, False, id="nan-beside-values"),
        pytest.param({"v": math.nan, "note": "too few samples"}, False, True, id="all-nan-on-normal-data"),
        pytest.param({"v": math.nan, "note": "too few samples"}, True, False, id="all-nan-on-tiny-data"),
        pytest.param({"v": [0.5, math.nan], "note": "one channel is dead"}, True, True, id="wrong-beside-nan"),
        pytest.param({"v": math.nan, "note": "  "}, True, True, id="blank-note"),
    ],
)
def test_undefined_values_pass_only_with_a_note(values: dict, undefined_ok: bool, fails: bool) -> None:
    spec = ContractSpec(get_metric("cka"), {}, {"v": 1.0})
    run = lambda: check_identity(spec, {"l": values}, None, "kit", undefined_ok=undefined_ok)  # noqa: E731
    if fails:
        with pytest.raises(AssertionError):
            run()
    else:
        run()


def test_glob_identity_keys_match_every_k_and_must_match_something() -> None:
    spec = ContractSpec(get_metric("topk_overlap"), {}, {"overlap_mean@*": 100.0})
    check_identity(spec, {"l": {"overlap_mean@4": 100.0, "overlap_mean@all": 100.0}}, None, "kit")
    with pytest.raises(AssertionError, match="overlap_mean@all"):
        check_identity(spec, {"l": {"overlap_mean@4": 100.0, "overlap_mean@all": 96.7}}, None, "kit")
    with pytest.raises(AssertionError, match="not in"):
        check_identity(spec, {"l": {"overlap@4": 100.0}}, None, "kit")
