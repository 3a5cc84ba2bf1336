"""The metric contract (ftprobe.testing.MetricContract) run over every installed metric, built-in or third-party.

Each metric found by ``list_metrics()`` gets every contract test, its identical pair checked against what the metric
declares (``Metric.identity``); the table below gives the options used for the metrics ftprobe knows (its built-ins
and the ftprobe-similarity plugin in ``plugins/``). A metric that declares no identity is still checked, its
identical pair only for computing.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import torch

from ftprobe.core.metric import Metric, ModelStep, Need, PairStep, Scope, WeightStep
from ftprobe.core.registry import get_metric, list_metrics, unregister_metric
from ftprobe.testing import SAME, ContractSpec, MetricContract, assert_outputs_close
from ftprobe.testing.contract import registered

ROOT = Path(__file__).parents[2]

KWARGS: dict[str, dict[str, Any]] = {"topk_overlap": {"k": 4}, "class_concentration": {"k": 4}}
DECLARING = {"cka", "weight_l2", "topk_overlap", "class_concentration", "svcca", "pwcca", "procrustes", "mutual_knn"}


class TestEveryInstalledMetric(MetricContract):
    @pytest.fixture(params=list_metrics(), ids=str)
    def contract_spec(self, request: pytest.FixtureRequest) -> ContractSpec:
        cls = get_metric(request.param)
        return ContractSpec(cls, KWARGS.get(request.param, {}), None if cls.identity is not None else {})


@pytest.mark.parametrize("name", sorted(DECLARING & set(list_metrics())))
def test_known_metrics_declare_their_identity(name: str) -> None:
    identity = get_metric(name).identity
    assert identity, f"{name} declares no identity (Metric.identity): its identical pair would only be computed"
    assert any(v is not SAME for v in identity.values()), f"{name}: identity must pin a value, not only SAME"


def test_builtins_are_in_the_contract_run() -> None:
    assert {"cka", "weight_l2", "topk_overlap", "class_concentration"} <= set(list_metrics())


# ------------------------------------------------------------------------------------------------------------------
# The metrics of the plugin author's guide and of examples/local_metric.py pass the contract as written


def _guide_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / "docs" / "plugins.md").read_text(), flags=re.S)


def _guide_metric() -> type[Metric]:
    [code] = [b for b in _guide_blocks("python") if "class MeanCosine" in b]
    ns: dict[str, Any] = {}
    exec(code, ns)
    return ns["MeanCosine"]


class TestGuideMetric(MetricContract):
    metric_cls = _guide_metric()
    identity = {"mean_cosine": 1.0}


def test_guide_pyproject_registers_the_guide_metric() -> None:
    [toml] = [b for b in _guide_blocks("toml") if "ftprobe.metrics" in b]
    section = toml.split('[project.entry-points."ftprobe.metrics"]\n', 1)[1].split("\n\n", 1)[0]
    assert section.strip() == 'mean_cosine = "ftprobe_cosine.metric:MeanCosine"'
    assert _guide_metric().name == "mean_cosine"


@pytest.fixture(scope="module")
def local_example() -> dict[str, Any]:
    try:
        return runpy.run_path(str(ROOT / "examples" / "local_metric.py"), run_name="local_metric")
    finally:
        unregister_metric("active_share")  # the example registers on import: keep the registry clean for others


class TestLocalExampleMetric(MetricContract):
    @pytest.fixture
    def contract_spec(self, local_example: dict[str, Any]) -> ContractSpec:
        return ContractSpec(local_example["ActiveShare"], {}, {"share": SAME, "share_change_mean": 0.0})


def test_local_example_runs(local_example: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with registered(local_example["ActiveShare"]):
        local_example["main"]()
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:4] == ["active_share", "mixed5b", "base", "share_mean"] for line in lines)
    assert any(line.startswith("active_share mixed4a  base → tuned   share_change_mean") for line in lines)


# ------------------------------------------------------------------------------------------------------------------
# The kit itself: each contract test must fail on a metric that breaks its rule (a contract that cannot fail is none)


class _Sum(Metric):
    """Sum of the base's spatially averaged features minus the tuned's (a well-behaved streaming metric)."""

    name = "kit_sum"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), reduce="sum")

    def update(self, step: PairStep) -> None:
        self.total = self.total + (step.base.view("gap").double() - step.tuned.view("gap").double()).sum()

    def compute(self) -> dict[str, Any]:
        return {"diff": self.total}


class _LastBatchOnly(_Sum):
    """Overwrites its state with each batch (the last-batch-only bug)."""

    def update(self, step: PairStep) -> None:
        self.total = (step.base.view("gap").double() - step.tuned.view("gap").double()).sum()


class _WrongReduction(_Sum):
    """Declares "max" for a state that must be summed."""

    def __init__(self) -> None:
        Metric.__init__(self)
        self.add_state("total", torch.zeros((), dtype=torch.float64), reduce="max")


class _StateOutsideState(_Sum):
    """Counts batches in a plain attribute that reset, merge and checkpoints do not know about."""

    batches = 0

    def update(self, step: PairStep) -> None:
        super().update(step)
        self.batches += 1

    def compute(self) -> dict[str, Any]:
        return {"diff": self.total, "batches": self.batches}


class _ObjectState(_Sum):
    """Keeps a non-tensor object in its state."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("seen", {"when": _Opaque()}, reduce=lambda a, b: a)


class _Opaque:
    pass


class _ReadsUndeclared(_Sum):
    """Reads "max" without declaring it."""

    def update(self, step: PairStep) -> None:
        super().update(step)
        step.base.view("max")


class _DeclaresUnread(_Sum):
    """Declares "max" and never reads it."""

    def views(self) -> frozenset[str]:
        return frozenset({"gap", "max"})


class _ModifiesViews(_Sum):
    """Centres the shared view in place."""

    def update(self, step: PairStep) -> None:
        step.base.view("gap").sub_(1.0)
        super().update(step)


class _UsesUndeclaredLabels(_Sum):
    """Uses labels when present, without declaring Need.LABELS."""

    def update(self, step: PairStep) -> None:
        super().update(step)
        if step.labels is not None:
            self.total = self.total + step.labels.sum()


class _WeightBlind(Metric):
    """Counts the layers it is given and never looks at their weights."""

    name = "kit_weight_blind"
    needs = Need.WEIGHTS

    def __init__(self) -> None:
        super().__init__()
        self.add_state("layers", torch.zeros((), dtype=torch.int64), reduce="max")

    def update(self, step: WeightStep) -> None:
        self.layers = self.layers + 1

    def compute(self) -> dict[str, Any]:
        return {"layers": self.layers}


BROKEN = [
    pytest.param(_LastBatchOnly, "test_streaming_equals_one_shot", "streamed vs one shot", id="last-batch-only"),
    pytest.param(_WrongReduction, "test_merge_equals_sequential", "shard", id="wrong-reduction"),
    pytest.param(_StateOutsideState, "test_reset", "after reset", id="state-outside-add_state-reset"),
    pytest.param(_StateOutsideState, "test_state_round_trip", "reloaded", id="state-outside-add_state-resume"),
    pytest.param(_ObjectState, "test_state_round_trip", "weights_only", id="object-in-state"),
    pytest.param(_ReadsUndeclared, "test_reads_only_declared_views", "does not declare", id="reads-undeclared-view"),
    pytest.param(_DeclaresUnread, "test_reads_only_declared_views", "never reads", id="declares-unread-view"),
    pytest.param(_ModifiesViews, "test_reads_only_declared_views", "in place", id="modifies-view"),
    pytest.param(_UsesUndeclaredLabels, "test_needs_honoured", "Need.LABELS", id="undeclared-labels"),
    pytest.param(_WeightBlind, "test_needs_honoured", "Need.WEIGHTS", id="weights-ignored"),
]


@pytest.mark.parametrize(("cls", "test", "message"), BROKEN)
def test_contract_catches_broken_metrics(cls: type[Metric], test: str, message: str) -> None:
    spec = ContractSpec(cls, {}, {"diff": 0.0})
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        getattr(MetricContract(), test)(spec)


class _LayerMeans(Metric):
    """Per model, the mean activation of every layer (model-scoped, one instance for all layers)."""

    name = "kit_layer_means"
    scope = Scope.MODEL
    layerwise = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sums", {}, reduce="sum")  # {layer: (2,) float64: sum of gap values, count}

    def update(self, step: ModelStep) -> None:
        for layer, act in step.act.items():
            x = act.view("gap").double()
            part = torch.stack([x.sum(), x.new_tensor(x.numel())])
            self.sums = {**self.sums, layer: self.sums[layer] + part if layer in self.sums else part}

    def compute(self) -> dict[str, Any]:
        return {layer: {"mean": s[0] / s[1]} for layer, s in self.sums.items()}

    def compare(self, base: Metric, tuned: Metric) -> dict[str, Any]:
        b, t = base.compute(), tuned.compute()
        return {layer: {"mean_change": t[layer]["mean"] - b[layer]["mean"]} for layer in b}


class _WeightDistances(Metric):
    """L2 distance of every selected layer's parameters (one instance for all layers)."""

    name = "kit_weight_distances"
    needs = Need.WEIGHTS
    layerwise = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("l2", {}, reduce="max")  # every shard sees the same weights: max keeps one copy

    def update(self, step: WeightStep) -> None:
        sq = sum(((p.detach().double() - q.detach().double()) ** 2).sum()
                 for p, q in zip(step.base.parameters(), step.tuned.parameters()))
        self.l2 = {**self.l2, step.layer: torch.as_tensor(sq).sqrt()}

    def compute(self) -> dict[str, Any]:
        return {layer: {"l2": v} for layer, v in self.l2.items()}


@pytest.mark.parametrize(
    ("cls", "identity"),
    [
        pytest.param(_Sum, {"diff": 0.0}, id="pair-layerwise"),
        pytest.param(_LayerMeans, {"mean": SAME, "mean_change": 0.0}, id="model-all-layers"),
        pytest.param(_WeightDistances, {"l2": 0.0}, id="weights-all-layers"),
    ],
)
def test_contract_passes_well_behaved_metrics(cls: type[Metric], identity: dict[str, Any]) -> None:
    spec = ContractSpec(cls, {}, identity)
    kit = MetricContract()
    for test in ("test_declaration", "test_merge_equals_sequential", "test_reset", "test_state_round_trip",
                 "test_identical_pair", "test_needs_honoured", "test_reads_only_declared_views",
                 "test_runs_in_compare"):
        getattr(kit, test)(spec)
    if Need.ACTIVATIONS in cls.needs:
        kit.test_streaming_equals_one_shot(spec)


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        pytest.param({"diff": 1.0}, "should be 1.0", id="wrong-value"),
        pytest.param({"nope": 0.0}, "not in the pair's values", id="unknown-key"),
        pytest.param({"diff": SAME}, "Scope.MODEL metrics only", id="same-on-pair-metric"),
        pytest.param(None, "declare `identity`", id="not-declared"),
    ],
)
def test_identity_expectations_can_fail(identity: dict[str, Any] | None, message: str) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        MetricContract().test_identical_pair(ContractSpec(_Sum, {}, identity))


def test_outputs_comparison_is_nan_aware_and_strict() -> None:
    nan = float("nan")
    assert_outputs_close({"a": torch.tensor([1.0, nan]), "b": [1, "x"]}, {"a": [1.0 + 1e-9, nan], "b": [1, "x"]})
    for other, message in (({"a": torch.tensor([1.0, 0.0]), "b": [1, "x"]}, r"\['a'\]"),
                           ({"a": torch.tensor([1.0, nan]), "b": [2, "x"]}, r"\['b'\]\[0\]"),
                           ({"a": torch.tensor([1.0, nan])}, "keys differ")):
        with pytest.raises(AssertionError, match=message):
            assert_outputs_close({"a": torch.tensor([1.0, nan]), "b": [1, "x"]}, other)
