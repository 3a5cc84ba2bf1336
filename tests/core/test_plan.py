"""The plan of a run: which feeds the selected metrics become, what each is fed, and the values each returns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftprobe.core.engine import MetricRequest
from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.metric import Activation, Metric, Need, RunContext, Scope
from ftprobe.core.plan import Comparison, ModelFeed, PairFeed, Plan, Topology, WeightFeed

LAYERS = ["a", "b"]


def topology(n_models: int = 2, *, paired: bool = True, widths_differ: list[str] | None = None) -> Topology:
    pairs = [(0, i) for i in range(1, n_models)]
    tuned = ["tuned"] if n_models == 2 else [f"tuned{i}" for i in range(1, n_models)]
    return Topology(
        labels=["base", *tuned], pairs=pairs, layers=list(LAYERS),
        names=[{k: k for k in LAYERS} for _ in range(n_models)],
        shapes=[{k: (4, 2, 2) for k in LAYERS} for _ in range(n_models)], counts=[len(LAYERS)] * n_models,
        paired=paired, same_arch=[True] * n_models, units={p: True for p in pairs},
        widths_differ={p: list(widths_differ or []) for p in pairs},
    )


class SumPair(Metric):
    """Sums the base's and the tuned model's gap per layer."""

    name = "sum_pair"

    def __init__(self, share: bool = False) -> None:
        super().__init__()
        self.share = share
        self.add_state("total", torch.zeros((), dtype=torch.float64), reduce="sum")

    def state_key(self):
        return "shared" if self.share else None

    def update(self, step):
        self.total = self.total + step.base.view("gap").sum() + step.tuned.view("gap").sum()

    def compute(self):
        return {"total": float(self.total)}


class PerModel(Metric):
    name = "per_model"
    scope = Scope.MODEL

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), reduce="sum")

    def views(self):
        return frozenset({"gap", "max"})

    def update(self, step):
        self.total = self.total + step.act.view("gap").sum()

    def compute(self):
        return {"total": float(self.total)}

    def compare(self, base, tuned):
        return {"diff": float(tuned.total - base.total)}


class WholeModel(Metric):
    name = "whole"
    layerwise = False
    pairs_units = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("n", torch.zeros((), dtype=torch.int64), reduce="sum")

    def update(self, step):
        assert set(step.base) == set(LAYERS) and set(step.tuned) == set(LAYERS)
        self.n = self.n + step.index.shape[0]

    def compute(self):
        return {layer: {"n": int(self.n)} for layer in LAYERS}


class WeightCount(Metric):
    name = "weight_count"
    needs = Need.WEIGHTS

    def __init__(self) -> None:
        super().__init__()
        self.add_state("params", torch.zeros((), dtype=torch.int64), reduce="sum")

    def update(self, step):
        self.params = self.params + sum(p.numel() for p in step.base.parameters())

    def compute(self):
        return {"params": int(self.params)}


def request(cls: type[Metric], explicit: bool = False, **options) -> MetricRequest:
    return MetricRequest(cls.name, cls, options, explicit=explicit)


def acts(value: float) -> dict[str, Activation]:
    return {k: Activation(k, {"gap": torch.full((3, 4), value), "max": torch.full((3, 4), value)}) for k in LAYERS}


def test_each_kind_of_metric_becomes_its_own_feeds():
    plan = Plan(topology(3), notice=lambda m: None).build(
        [request(SumPair), request(PerModel), request(WholeModel), request(WeightCount)], RunContext())
    kinds = [(type(f).__name__, f.name, f.layer, getattr(f, "pair", getattr(f, "model", None))) for f in plan.feeds]
    assert kinds == [
        ("PairFeed", "sum_pair", "a", (0, 1)), ("PairFeed", "sum_pair", "b", (0, 1)),
        ("PairFeed", "sum_pair", "a", (0, 2)), ("PairFeed", "sum_pair", "b", (0, 2)),
        ("ModelFeed", "per_model", "a", 0), ("ModelFeed", "per_model", "b", 0),
        ("ModelFeed", "per_model", "a", 1), ("ModelFeed", "per_model", "b", 1),
        ("ModelFeed", "per_model", "a", 2), ("ModelFeed", "per_model", "b", 2),
        ("PairFeed", "whole", None, (0, 1)), ("PairFeed", "whole", None, (0, 2)),
        ("WeightFeed", "weight_count", "a", (0, 1)), ("WeightFeed", "weight_count", "b", (0, 1)),
        ("WeightFeed", "weight_count", "a", (0, 2)), ("WeightFeed", "weight_count", "b", (0, 2)),
    ]
    assert [f for f in plan.batch_feeds if isinstance(f, WeightFeed)] == []  # weights only: no step per batch
    assert [(c.base.model, c.tuned.model, c.base.layer) for c in plan.comparisons] == [
        (0, 1, "a"), (0, 1, "b"), (0, 2, "a"), (0, 2, "b")]
    assert all(isinstance(c, Comparison) for c in plan.comparisons)
    # What each model's capture keeps: the union of the views its feeds read, on every layer.
    assert plan.views() == [{"a": {"gap", "max"}, "b": {"gap", "max"}}] * 3
    assert plan.needs_data


def test_feeding_gives_each_feed_its_step_and_values_in_result_order():
    plan = Plan(topology(), notice=lambda m: None).build([request(SumPair), request(PerModel), request(WholeModel)],
                                                         RunContext())
    index = torch.arange(3)
    for _ in range(2):
        plan.feed([acts(1.0), acts(2.0)], index, None)
    values = [(v.metric, v.scope, v.layer, v.model, v.base, v.tuned, dict(v.scalars)) for v in plan.values()]
    assert values == [
        ("sum_pair", "pair", "a", None, "base", "tuned", {"total": 2 * 12 * 3.0}),
        ("sum_pair", "pair", "b", None, "base", "tuned", {"total": 2 * 12 * 3.0}),
        ("per_model", "model", "a", "base", None, None, {"total": 24.0}),
        ("per_model", "model", "b", "base", None, None, {"total": 24.0}),
        ("per_model", "model", "a", "tuned", None, None, {"total": 48.0}),
        ("per_model", "model", "b", "tuned", None, None, {"total": 48.0}),
        ("whole", "pair", "a", None, "base", "tuned", {"n": 6}),
        ("whole", "pair", "b", None, "base", "tuned", {"n": 6}),
        # the pair values of a model-scoped metric come last, from compare()
        ("per_model", "pair", "a", None, "base", "tuned", {"diff": 24.0}),
        ("per_model", "pair", "b", None, "base", "tuned", {"diff": 24.0}),
    ]


def test_weight_feeds_read_each_layers_modules_once_before_the_batches():
    plan = Plan(topology(), notice=lambda m: None).build([request(WeightCount)], RunContext())
    models = [nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(3, 1)}) for _ in range(2)]
    plan.feed_weights(models)
    assert not plan.needs_data and plan.views() == [{}, {}]
    assert [(v.layer, v.scalars["params"]) for v in plan.values()] == [("a", 9), ("b", 4)]


def test_a_shared_state_is_fed_once_and_copied_into_its_followers():
    plan = Plan(topology(), notice=lambda m: None).build([request(SumPair, share=True)], RunContext())
    owner_a, owner_b = plan.feeds
    assert owner_a.owner is None and owner_b.owner is None  # one state per layer: the key includes the layer
    plan = Plan(topology(), notice=lambda m: None).build(
        [request(SumPair, share=True), MetricRequest("sum_pair2", SumPair, {"share": True})], RunContext())
    followers = [f for f in plan.feeds if f.owner is not None]
    assert [(f.name, f.layer, f.owner.name) for f in followers] == [("sum_pair2", "a", "sum_pair"),
                                                                     ("sum_pair2", "b", "sum_pair")]
    assert len(plan.owners()) == 2 and all(f not in plan.batch_feeds for f in followers)
    plan.feed([acts(1.0), acts(1.0)], torch.arange(3), None)
    totals = {(v.metric, v.layer): v.scalars["total"] for v in plan.values()}
    assert totals == {("sum_pair", "a"): 24.0, ("sum_pair", "b"): 24.0,
                      ("sum_pair2", "a"): 24.0, ("sum_pair2", "b"): 24.0}


def test_a_layer_of_another_width_is_left_out_of_metrics_that_pair_channels():
    notices: list[str] = []
    plan = Plan(topology(widths_differ=["b"]), notices.append).build([request(SumPair), request(PerModel)],
                                                                     RunContext())
    assert [(f.name, f.layer) for f in plan.feeds if isinstance(f, PairFeed)] == [("sum_pair", "a")]
    assert [(f.layer, f.model) for f in plan.feeds if isinstance(f, ModelFeed)] == [
        ("a", 0), ("b", 0), ("a", 1), ("b", 1)]  # each model's own statistics keep every layer ...
    assert [c.base.layer for c in plan.comparisons] == ["a"]  # ... but the pair is compared where widths agree
    assert any("layer 'b' left out for base → tuned" in n for n in notices)


def test_unpaired_layers_skip_layerwise_metrics_or_refuse_a_named_one():
    notices: list[str] = []
    topo = topology(paired=False)
    topo.units = {(0, 1): False}
    plan = Plan(topo, notices.append).build([request(SumPair), request(WholeModel)], RunContext())
    assert [f.name for f in plan.feeds] == ["whole"]
    assert [s["metric"] for s in plan.skipped] == ["sum_pair"]
    assert notices and notices[0].startswith("skipped metric 'sum_pair' pairs channels one to one")
    with pytest.raises(MetricNeedsError, match="metric 'sum_pair' cannot run on these models"):
        Plan(topo, notices.append).build([request(SumPair, explicit=True), request(WholeModel)], RunContext())
    with pytest.raises(MetricNeedsError, match="no metric can run on these models"):
        Plan(topo, notices.append).build([request(SumPair)], RunContext())


def test_states_round_trip_through_dump_and_load():
    build = lambda: Plan(topology(), notice=lambda m: None).build([request(SumPair)], RunContext())  # noqa: E731
    plan = build()
    plan.feed([acts(1.0), acts(3.0)], torch.arange(3), None)
    again = build()
    again.load_states(plan.dump_states())
    assert [v.scalars for v in again.values()] == [v.scalars for v in plan.values()]
    with pytest.raises(ValueError, match="checkpoint holds 1 metric states, this run has 2"):
        again.load_states(plan.dump_states()[:1])


def test_one_run_position_for_checkpoint_resume_and_the_ranks(tmp_path):
    from ftprobe.core.checkpoint import Checkpointer, RunPosition

    pos = RunPosition()
    pos.advance(16)
    pos.advance(11)
    pos.seen(torch.tensor([40, 3, 26]))
    pos.seen(None)  # nothing fed since the last save: unchanged
    assert (pos.batches, pos.samples, pos.last_index) == (2, 27, 40)
    ckpt = Checkpointer(tmp_path / "c.pt", fingerprint="job")
    ckpt.save(pos, [{"x": torch.ones(2)}])
    back, states = ckpt.load()
    assert back == pos and torch.equal(states[0]["x"], torch.ones(2))
    other = RunPosition(batches=1, samples=5, last_index=7)
    assert RunPosition.merged([pos, other]) == RunPosition(batches=3, samples=32, last_index=40)


def test_the_contract_harness_feeds_the_engines_plan():
    from ftprobe.testing import synthetic_run
    from ftprobe.testing.data import Harness

    spec = type("Spec", (), {"metric_cls": PerModel, "kwargs": {}})
    run = synthetic_run()
    harness = Harness(spec, run).feed(run)
    assert isinstance(harness.plan, Plan)
    assert sorted(harness.metrics) == [("base", "mixed4a"), ("base", "mixed5b"), ("tuned", "mixed4a"),
                                       ("tuned", "mixed5b")]
    out = harness.outputs()
    for layer in ("mixed4a", "mixed5b"):
        base, tuned = (out["compute"][side][layer]["total"] for side in ("base", "tuned"))
        assert base == pytest.approx(float(sum(b.base[layer].mean(dim=(2, 3)).sum() for b in run.batches)))
        assert out["compare"][layer]["diff"] == pytest.approx(tuned - base)
