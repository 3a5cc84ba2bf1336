"""Intervals over images: the jackknife itself, the groups, the leave-one-group-out states, the paired difference,
intervals through a whole comparison (full values unchanged, weights without), the shuffled-pairing control against
brute force, the control models, and coverage by simulation from a generative model of known population CKA."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import numpy as np
import pytest
import torch

import ftprobe
from ftprobe.core.engine import MetricRequest
from ftprobe.core.errors import FtprobeError
from ftprobe.core.intervals import (
    Resampling,
    difference,
    group_of,
    jackknife_interval,
    leave_one_out,
    merge_states,
    t_quantile,
)
from ftprobe.core.metric import Activation, Metric, RunContext, Scope
from ftprobe.core.plan import Plan, Topology
from ftprobe.core.results import Value
from ftprobe.metrics.cka import CKA
from ftprobe.report.schema import validate_results
from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy

# ---------------------------------------------------------------------------------------------------------------
# The jackknife, the groups and the leave-one-out states


def test_jackknife_of_the_mean_is_the_standard_error_of_the_group_means() -> None:
    rng = np.random.default_rng(0)
    groups = [rng.normal(3.0, 1.0, 25) for _ in range(12)]  # equal sizes: the delete-a-group jackknife is exact
    allx = np.concatenate(groups)
    total, n = allx.sum(), allx.size
    reps = [(total - g.sum()) / (n - g.size) for g in groups]
    iv = jackknife_interval(float(allx.mean()), reps, 0.9)
    means = np.array([g.mean() for g in groups])
    se = means.std(ddof=1) / math.sqrt(len(groups))
    assert iv["se"] == pytest.approx(se, rel=1e-10)
    assert iv["bias"] == pytest.approx(0.0, abs=1e-10)  # the mean is unbiased
    half = t_quantile(0.9, 11) * se
    assert (iv["lo"], iv["hi"]) == pytest.approx((allx.mean() - half, allx.mean() + half), rel=1e-10)


def test_jackknife_skips_empty_groups_and_says_when_it_is_undefined() -> None:
    assert jackknife_interval(1.0, [1.0, None, 3.0, None])["se"] == pytest.approx(
        jackknife_interval(1.0, [1.0, 3.0])["se"])
    one = jackknife_interval(1.0, [1.0, None, None])
    assert math.isnan(one["lo"]) and "2 or more" in one["note"]
    bad = jackknife_interval(1.0, [1.0, float("nan"), 2.0])
    assert math.isnan(bad["hi"]) and "too few images" in bad["note"]
    assert "not finite" in jackknife_interval(float("nan"), [1.0, 2.0])["note"]
    assert t_quantile(0.95, 10**6) == pytest.approx(1.959964, abs=1e-5)


def test_groups_are_a_seeded_function_of_the_global_index() -> None:
    index = torch.arange(40_000)
    g = group_of(index, 20, seed=3)
    assert g.dtype == torch.int64 and int(g.min()) == 0 and int(g.max()) == 19
    assert torch.equal(g, group_of(index, 20, seed=3))  # the same on every rank and every run
    assert torch.equal(g[1234:1250], group_of(index[1234:1250], 20, seed=3))  # a shard's batch: its own groups
    assert (g != group_of(index, 20, seed=4)).float().mean() > 0.9  # another seed, other groups
    counts = torch.bincount(g, minlength=20).double()
    chi2 = float(((counts - 2000) ** 2 / 2000).sum())
    assert chi2 < 45  # 19 degrees of freedom: p ≈ 0.001
    assert int(g[:20].unique().numel()) > 8  # consecutive images do not share a group
    big = group_of(torch.tensor([2**40, 2**40 + 1]), 20)
    assert big.min() >= 0 and big.max() < 20


class Sum(Metric):
    name = "sum"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), reduce="sum")
        self.add_state("seen", torch.zeros(0, dtype=torch.int64), reduce="cat")

    def update(self, step):
        self.total = self.total + step.base.view("gap").double().sum()
        self.seen = torch.cat([self.seen, step.index])

    def compute(self):
        return {"total": float(self.total)}


def test_leave_one_out_gives_every_group_out_once_and_leaves_the_replicas_as_they_were() -> None:
    for groups in (1, 2, 7, 16):
        kinds = [Sum(), Sum()]
        replicas = [[{"total": torch.tensor(float(10 * i + j), dtype=torch.float64),
                      "seen": torch.tensor([j], dtype=torch.int64)} for j in range(groups)] for i in range(2)]
        before = [[{k: v.clone() for k, v in s.items()} for s in r] for r in replicas]
        seen = []
        for j, states in leave_one_out(replicas, kinds):
            seen.append(j)
            for i, st in enumerate(states):
                if groups == 1:
                    assert st is None
                    continue
                assert float(st["total"]) == sum(10 * i + m for m in range(groups) if m != j)
                assert sorted(st["seen"].tolist()) == [m for m in range(groups) if m != j]
        assert seen == list(range(groups))
        for r, b in zip(replicas, before):
            assert all(torch.equal(s[k], t[k]) for s, t in zip(r, b) for k in s)
    assert merge_states(Sum(), None, {"total": 1}) == {"total": 1}


def _value(est: float, reps: list[float | None], key: str = "x") -> Value:
    return Value("m", "l", "pair", scalars={key: est},
                 intervals={key: {**jackknife_interval(est, reps), "replicates": reps}})


def test_difference_pairs_the_replicates_by_group() -> None:
    rng = np.random.default_rng(1)
    common = rng.normal(0, 1.0, 10)  # what both values share through the same images
    a = _value(5.0, list(5.0 + common + rng.normal(0, 0.01, 10)))
    b = _value(4.9, list(4.9 + common + rng.normal(0, 0.01, 10)))
    d = difference(a, b, "x")
    assert d["estimate"] == pytest.approx(0.1)
    # The shared variation cancels: the difference is far tighter than either value, and is not noise.
    assert d["se"] < a.intervals["x"]["se"] / 20 and not d["within_noise"]
    unpaired = math.hypot(a.intervals["x"]["se"], b.intervals["x"]["se"])
    assert d["se"] < unpaired / 20
    same = difference(a, a, "x")
    assert same["estimate"] == 0 and same["se"] == 0 and same["within_noise"]
    noisy = difference(a, _value(4.9, list(4.9 + rng.normal(0, 1.0, 10))), "x")
    assert noisy["within_noise"]
    assert difference(a, Value("m", "l", "pair", scalars={"x": 1.0}), "x") is None  # no interval: no claim
    gap = difference(_value(1.0, [1.0, None, 1.2]), _value(0.5, [0.4, 0.5, None]), "x")
    assert gap["note"]  # only one group is defined in both


def test_resampling_refuses_bad_settings_with_advice() -> None:
    with pytest.raises(FtprobeError, match="at least 2 groups"):
        Resampling(groups=1)
    with pytest.raises(FtprobeError, match="between 0 and 1"):
        Resampling(level=95)


# ---------------------------------------------------------------------------------------------------------------
# Through the plan: replicas, followers, model-scoped comparisons


def _topology(n_models: int = 2, width: int = 4) -> Topology:
    pairs = [(0, i) for i in range(1, n_models)]
    return Topology(labels=["base", *(f"t{i}" for i in range(1, n_models))], pairs=pairs, layers=["l"],
                    names=[{"l": "l"}] * n_models, shapes=[{"l": (width,)}] * n_models, counts=[1] * n_models,
                    paired=True, same_arch=[True] * n_models, units={p: True for p in pairs},
                    widths_differ={p: [] for p in pairs})


class SharedMean(Metric):
    """The mean of the base's gap, from a state another metric shares."""

    name = "shared_mean"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), reduce="sum")
        self.add_state("n", torch.zeros((), dtype=torch.int64), reduce="sum")

    def state_key(self):
        return "shared-moments"

    def update(self, step):
        self.total = self.total + step.base.view("gap").double().sum()
        self.n = self.n + step.base.view("gap").numel()

    def compute(self):
        return {"mean": float(self.total / self.n)}


class SharedTotal(SharedMean):
    name = "shared_total"

    def compute(self):
        return {"total": float(self.total)}


class ModelMean(SharedMean):
    name = "model_mean"
    scope = Scope.MODEL

    def state_key(self):
        return None

    def update(self, step):
        self.total = self.total + step.act.view("gap").double().sum()
        self.n = self.n + step.act.view("gap").numel()

    def compare(self, base, tuned):
        return {"gap": float(tuned.total / tuned.n - base.total / base.n)}


def _feed(plan: Plan, xs: list[torch.Tensor], batch: int) -> None:
    for s in range(0, xs[0].shape[0], batch):
        idx = torch.arange(s, min(s + batch, xs[0].shape[0]))
        plan.feed([{"l": Activation("l", {"gap": x[idx]})} for x in xs], idx, None)


def _brute_replicates(stat, xs: list[torch.Tensor], groups: int, seed: int) -> list[float]:
    g = group_of(torch.arange(xs[0].shape[0]), groups, seed)
    return [stat([x[g != j] for x in xs]) for j in range(groups)]


def test_followers_and_model_comparisons_get_the_replicates_of_their_own_statistic() -> None:
    torch.manual_seed(0)
    xs = [torch.randn(90, 4, dtype=torch.float64) + i for i in range(2)]
    reqs = [MetricRequest(c.name, c) for c in (SharedMean, SharedTotal, ModelMean)]
    plan = Plan(_topology(), lambda m: None, Resampling(6, 0.9, seed=2)).build(reqs, RunContext())
    assert plan.feeds[1].owner is plan.feeds[0] and plan.feeds[1].replicas == []  # a follower: no replicas
    _feed(plan, xs, batch=16)
    values = {(v.metric, v.scope): v for v in plan.values()}
    checks = {
        ("shared_mean", "pair"): ("mean", lambda s: float(s[0].mean())),
        ("shared_total", "pair"): ("total", lambda s: float(s[0].sum())),
        ("model_mean", "pair"): ("gap", lambda s: float(s[1].mean() - s[0].mean())),
    }
    for key, (k, stat) in checks.items():
        v = values[key]
        assert v.scalars[k] == pytest.approx(stat(xs), rel=1e-12)  # the full value: every group merged
        assert v.intervals[k]["replicates"] == pytest.approx(_brute_replicates(stat, xs, 6, 2), rel=1e-12)
        assert v.intervals[k]["lo"] < v.scalars[k] < v.intervals[k]["hi"]
    rec = plan.resampling_record()
    assert rec["groups"] == 6 and rec["groups_used"] == 6 and rec["unit"] == "sample"


def test_minibatch_cka_resamples_whole_batches() -> None:
    torch.manual_seed(0)
    xs = [torch.randn(200, 4), torch.randn(200, 4)]
    xs[1] += xs[0]
    plan = Plan(_topology(), lambda m: None, Resampling(5, seed=1)).build(
        [MetricRequest("cka", CKA, {"estimator": "minibatch"})], RunContext())
    _feed(plan, xs, batch=20)
    (v,) = [v for v in plan.values() if v.layer == "l"]
    batch_groups = group_of(torch.arange(0, 200, 20), 5, 1)
    reps = v.intervals["cka"]["replicates"]
    assert [r is not None for r in reps] == [bool((batch_groups == j).any()) for j in range(5)]
    assert plan.resampling_record()["units"] == {"cka": "batch"}
    for j, r in enumerate(reps):  # leaving group j out = the minibatch CKA of the other groups' batches
        if r is None:
            continue
        other = Plan(_topology(), lambda m: None).build([MetricRequest("cka", CKA, {"estimator": "minibatch"})],
                                                         RunContext())
        for b, s in enumerate(range(0, 200, 20)):
            if int(batch_groups[b]) != j:
                idx = torch.arange(s, s + 20)
                other.feed([{"l": Activation("l", {"gap": x[idx]})} for x in xs], idx, None)
        (w,) = [w for w in other.values() if w.layer == "l"]
        assert r == pytest.approx(w.scalars["cka"], rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Through a whole comparison


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("iv"), classes=3, per_class=10, size=20)


KW = dict(metrics="cka,topk_overlap,class_concentration,weight_l2", options={"*": {"k": 4}},
          layers=["mixed3a", "mixed5b"], size=16, batch_size=6)


def test_intervals_leave_the_values_as_they_are_and_cover_the_headline_numbers(folder) -> None:
    base = TinyNet()
    tuned = perturbed_copy(base, 0.3)
    plain = ftprobe.compare(base, tuned, data=folder, **KW)
    notices: list[str] = []
    with_iv = ftprobe.compare(base, tuned, data=folder, intervals=True, interval_groups=8, level=0.9,
                              notice=notices.append, **KW)
    assert any("8 groups of images" in n and "memory" in n for n in notices)  # the cost, said before the pass
    assert len(plain.values) == len(with_iv.values)
    for a, b in zip(plain.values, with_iv.values):
        assert (a.metric, a.layer, a.subject) == (b.metric, b.layer, b.subject)
        for k, x in a.scalars.items():
            y = b.scalars[k]
            assert (x != x and y != y) or y == pytest.approx(x, rel=1e-9, abs=1e-12), (a.metric, a.layer, k)
        assert not a.intervals
    got = {(v.metric, v.layer): set(v.intervals) for v in with_iv.values if v.intervals}
    for layer in KW["layers"]:
        assert got[("cka", layer)] == {"cka", "cka_shuffled"}
        assert got[("topk_overlap", layer)] == {"overlap_mean@4", "overlap_median@4"}
        assert "entropy_mean@4" in got[("class_concentration", layer)]
    assert not any(v.intervals for v in with_iv.select("weight_l2"))  # weights do not depend on the images
    for v in with_iv.select("cka"):
        if "cka" in v.intervals:
            iv = v.intervals["cka"]
            assert iv["lo"] < v.scalars["cka"] < iv["hi"] and len(iv["replicates"]) == 8
    assert with_iv.resampling == {"method": "jackknife", "groups": 8, "level": 0.9, "seed": 0, "unit": "sample",
                                  "units": {"cka": "sample", "topk_overlap": "sample",
                                            "class_concentration": "sample"}, "groups_used": 8}
    assert plain.resampling is None
    data = json.loads(with_iv.to_json())
    validate_results(data)
    back = ftprobe.Result.from_dict(data)
    v0 = next(v for v in back.select("cka") if v.intervals)
    assert v0.intervals["cka"]["replicates"] == pytest.approx(
        next(v for v in with_iv.select("cka") if v.intervals).intervals["cka"]["replicates"])


def test_cka_shuffled_is_the_mean_over_every_pairing_of_the_images() -> None:
    torch.manual_seed(3)
    n = 7
    x = torch.randn(n, 3, dtype=torch.float64)
    y = torch.randn(n, 5, dtype=torch.float64) + x[:, :1]
    metric = CKA()
    from ftprobe.core.metric import PairStep

    metric.update(PairStep("l", Activation("l", {"gap": x}), Activation("l", {"gap": y}), torch.arange(n)))
    got = metric.compute()["l"]["cka_shuffled"]

    def cka(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return float((a.T @ b).square().sum() / (torch.linalg.norm(a.T @ a) * torch.linalg.norm(b.T @ b)))

    brute = statistics.fmean(cka(x, y[list(p)]) for p in itertools.permutations(range(n)))
    assert got == pytest.approx(brute, rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Controls


def test_random_init_control_and_seed_pair_are_compared_and_recorded(folder) -> None:
    base = TinyNet()
    a1, a2 = perturbed_copy(base, 0.2), perturbed_copy(base, 0.2)
    notices: list[str] = []
    r = ftprobe.compare(base, a1, a2, data=folder, labels=["base", "a1", "a2"], random_init=True,
                        seed_pairs=[("a1", "a2")], notice=notices.append,
                        **{**KW, "metrics": "cka,weight_l2"})
    assert r.controls == {"random_init": "random_init", "seed_pairs": [["a1", "a2"]]}
    assert any("random_init" in n and "fresh random weights" in n for n in notices)
    pairs = {(v.base, v.tuned) for v in r.select("cka") if v.layer in KW["layers"]}
    assert pairs == {("base", "a1"), ("base", "a2"), ("a1", "a2"), ("base", "random_init")}
    cka = {(v.base, v.tuned, v.layer): v.scalars["cka"] for v in r.select("cka") if "cka" in v.scalars}
    for layer in KW["layers"]:  # a network that learnt nothing is further from the base than a fine-tune
        assert cka[("base", "random_init", layer)] < cka[("base", "a1", layer)]
    assert all(0.9 < v.scalars["relative"] for v in r.select("weight_l2") if v.tuned == "random_init"
               and "relative" in v.scalars)
    validate_results(json.loads(r.to_json()))
    again = ftprobe.compare(base, a1, data=folder, random_init=True, **{**KW, "metrics": "cka"})
    same = {v.layer: v.scalars["cka"] for v in again.select("cka") if v.tuned == "random_init" and "cka" in v.scalars}
    assert same == {layer: pytest.approx(cka[("base", "random_init", layer)], rel=1e-9) for layer in KW["layers"]}


@pytest.mark.parametrize(("pair", "message"), [
    (("a1", "zz"), "no model is labelled 'zz'"),
    (("a1", "a1"), "two fine-tuned models"),
    (("base", "a1"), "two fine-tuned models"),
    (("a1",), "names two models"),
])
def test_seed_pairs_that_name_no_fine_tune_pair_are_refused(folder, pair, message) -> None:
    base = TinyNet()
    with pytest.raises(FtprobeError, match=message):
        ftprobe.compare(base, perturbed_copy(base), perturbed_copy(base), data=folder, labels=["base", "a1", "a2"],
                        seed_pairs=[pair], **{**KW, "metrics": "cka"})


# ---------------------------------------------------------------------------------------------------------------
# Coverage by simulation: features from a Gaussian model whose population CKA is known in closed form

P = 6


def _gaussian_model():
    g = torch.Generator().manual_seed(1234)
    var = torch.linspace(0.3, 2.0, P, dtype=torch.float64)
    a = torch.randn(P, P, generator=g, dtype=torch.float64)
    sigma = 1.5
    sxx = torch.diag(var)
    sxy = sxx @ a.T  # X ~ N(0, diag(var)), Y = A X + sigma E
    syy = a @ sxx @ a.T + sigma**2 * torch.eye(P, dtype=torch.float64)
    pop = float(sxy.square().sum() / (torch.linalg.norm(sxx) * torch.linalg.norm(syy)))
    return var.sqrt(), a, sigma, pop


def _draw(n: int, seed: int):
    sd, a, sigma, _ = _gaussian_model()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, P, generator=g, dtype=torch.float64) * sd
    return x, x @ a.T + sigma * torch.randn(n, P, generator=g, dtype=torch.float64)


def test_population_cka_of_the_model_is_what_a_very_large_sample_gives() -> None:
    *_, pop = _gaussian_model()
    x, y = _draw(400_000, seed=99)
    metric = CKA()
    from ftprobe.core.metric import PairStep

    metric.update(PairStep("l", Activation("l", {"gap": x}), Activation("l", {"gap": y}), torch.arange(len(x))))
    assert float(metric.compute()["l"]["cka"]) == pytest.approx(pop, abs=3e-3)


def _coverage(options: dict, n: int, batch: int, draws: int) -> float:
    *_, pop = _gaussian_model()
    hits = 0
    for seed in range(draws):
        x, y = _draw(n, seed)
        plan = Plan(_topology(width=P), lambda m: None, Resampling(20, 0.95, seed=seed)).build(
            [MetricRequest("cka", CKA, options)], RunContext(num_samples=n, batch_size=batch))
        _feed(plan, [x.float(), y.float()], batch)
        (v,) = [v for v in plan.values() if v.layer == "l"]
        hits += v.intervals["cka"]["lo"] <= pop <= v.intervals["cka"]["hi"]
    return hits / draws


@pytest.mark.slow
@pytest.mark.parametrize(("options", "n", "batch"), [
    ({}, 400, 50),  # the exact estimator (biased HSIC, the default)
    ({"debiased": True}, 400, 50),  # the exact estimator with unbiased HSIC
    ({"estimator": "minibatch"}, 800, 25),  # minibatch CKA: whole batches are resampled
], ids=["exact", "exact-debiased", "minibatch"])
def test_95_percent_intervals_cover_the_population_cka_in_93_to_97_percent_of_draws(options, n, batch) -> None:
    assert 0.93 <= _coverage(options, n, batch, draws=1000) <= 0.97


def test_intervals_cover_the_population_cka_in_a_short_simulation() -> None:
    # A quick guard for the slow test above: 150 draws of the debiased exact estimator (binomial sd ≈ 1.8 %).
    assert 0.89 <= _coverage({"debiased": True}, 300, 50, draws=150) <= 0.99


def test_the_cka_figure_shades_the_intervals_and_draws_the_chance_level(folder, tmp_path, monkeypatch) -> None:
    from ftprobe.metrics import figures

    base = TinyNet()
    r = ftprobe.compare(base, perturbed_copy(base, 0.3), data=folder, intervals=True, interval_groups=5,
                        **{**KW, "metrics": "cka"})
    drawn: list = []
    real = figures._report.interval_band
    monkeypatch.setattr(figures._report, "interval_band",
                        lambda ax, x, bounds, color: drawn.append(bounds) or real(ax, x, bounds, color))
    (fig,) = figures.cka_per_layer(r, tmp_path)
    assert "Shaded: 95% intervals over images" in fig.caption and "Dotted" in fig.caption
    (lo, hi), values = drawn[0], [v for v in r.select("cka") if v.intervals]
    assert list(lo) == pytest.approx([v.intervals["cka"]["lo"] for v in values])
    assert list(hi) == pytest.approx([v.intervals["cka"]["hi"] for v in values])
