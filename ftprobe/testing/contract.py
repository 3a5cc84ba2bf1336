"""The metric contract, as pytest tests a plugin author subclasses (needs pytest)::

    from ftprobe.testing import MetricContract, SAME

    class TestMine(MetricContract):
        metric_cls = Mine
        metric_kwargs = {"k": 4}                  # options used by every test (default: none)
        identity = {"mine": 1.0}                  # key -> value expected when base and tuned are identical

Each test feeds the metric as the engine does (``setup``, then ``update`` under ``torch.inference_mode``; one
instance per layer unless ``layerwise = False``; ``compare`` for ``Scope.MODEL``; ``WeightStep`` for weights) on the
seeded data of :mod:`ftprobe.testing.data`. What each test checks, and the forms of ``identity`` (a number, a
callable ``value -> bool``, or :data:`SAME`), are documented in ``docs/plugins.md`` ("The contract tests").
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import json
import numbers
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import torch

from ftprobe.core.metric import SAME, Metric, Need, Scope
from ftprobe.core.results import _to_jsonable
from ftprobe.core.views import VIEWS

from .data import LAYERS, Harness, TinyImages, ViewLog, model_scoped, synthetic_run, tiny_pair
from .models import TinyNet

__all__ = ["SAME", "ContractSpec", "MetricContract", "assert_outputs_close", "check_identity"]


@dataclass(frozen=True)
class ContractSpec:
    """Which metric the contract checks, with which options and expectations."""

    metric_cls: type[Metric]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    identity: Mapping[str, Any] | None = None  # None: what the metric class declares (``Metric.identity``)
    atol: float = 1e-6
    rtol: float = 1e-5
    identity_atol: float = 1e-6

    @property
    def name(self) -> str:
        return str(getattr(self.metric_cls, "name", self.metric_cls.__name__))

    @property
    def expected_identity(self) -> Mapping[str, Any] | None:
        """The identity expectations: given here, else declared by the metric class, else ``None``."""
        return self.identity if self.identity is not None else getattr(self.metric_cls, "identity", None)


def _numeric(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, numbers.Number)) or type(x).__module__ == "numpy"


def _as_tensor(x: Any, where: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{where}: {x!r} is not a rectangular array of numbers") from None


def assert_outputs_close(a: Any, b: Any, *, atol: float = 1e-6, rtol: float = 1e-5, where: str = "output") -> None:
    """Assert two metric outputs (mappings, lists, tensors, numbers, strings, nested) are equal: floating values
    within ``atol + rtol·|b|`` with NaN equal to NaN, integers, booleans and everything else exactly."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise AssertionError(f"{where}: {type(a).__name__} vs {type(b).__name__}")
        if set(a) != set(b):
            raise AssertionError(f"{where}: keys differ; only in the first: {sorted(map(str, set(a) - set(b)))}, "
                                 f"only in the second: {sorted(map(str, set(b) - set(a)))}")
        for key in a:
            assert_outputs_close(a[key], b[key], atol=atol, rtol=rtol, where=f"{where}[{key!r}]")
    elif (_numeric(a) or _numeric(b)) and all(_numeric(x) or isinstance(x, (list, tuple)) for x in (a, b)):
        ta, tb = _as_tensor(a, where), _as_tensor(b, where)  # a tensor against its list form compares by value
        if ta.shape != tb.shape:
            raise AssertionError(f"{where}: shape {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.is_floating_point() or tb.is_floating_point():
            torch.testing.assert_close(ta.double(), tb.double(), atol=atol, rtol=rtol, equal_nan=True,
                                       msg=lambda m: f"{where}: {m}")
        elif not torch.equal(ta, tb):
            raise AssertionError(f"{where}: {ta.tolist()} != {tb.tolist()}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            raise AssertionError(f"{where}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            assert_outputs_close(x, y, atol=atol, rtol=rtol, where=f"{where}[{i}]")
    elif a != b:
        raise AssertionError(f"{where}: {a!r} != {b!r}")


def outputs_close(a: Any, b: Any, *, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    """Whether :func:`assert_outputs_close` passes."""
    try:
        assert_outputs_close(a, b, atol=atol, rtol=rtol)
    except AssertionError:
        return False
    return True


def _matches(key: str, vals: Mapping[str, Any]) -> list[str]:
    """The keys of ``vals`` that ``key`` names: itself, or every key matching it when it is a glob."""
    if any(c in key for c in "*?["):
        return [k for k in vals if isinstance(k, str) and fnmatch.fnmatchcase(k, key)]
    return [key] if key in vals else []


def _lookup(by_layer: Mapping[str, Mapping[str, Any]], key: str, what: str) -> list[tuple[str, Any]]:
    """``(where, value)`` for every value ``key`` (a key or a glob of keys) names, per layer (``"*"`` last resort);
    ``where`` is ``"layer"`` or ``"layer[key]"`` for a glob."""
    glob = any(c in key for c in "*?[")

    def found_in(layers: list[str]) -> list[tuple[str, Any]]:
        return [(f"{layer}[{k}]" if glob else layer, by_layer[layer][k])
                for layer in layers for k in _matches(key, by_layer[layer])]

    found = found_in([layer for layer in by_layer if layer != "*"])
    if not found and "*" in by_layer:
        found = found_in(["*"])
    if not found:
        keys = sorted({str(k) for vals in by_layer.values() for k in vals})
        raise AssertionError(f"identity key {key!r} is not in {what}; its keys are {keys}")
    return found


def _numbers(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, (list, tuple)):
        parts = [_numbers(v, where) for v in value]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise AssertionError(f"{where}: {value!r} is not numeric; use SAME or a callable for it in `identity`")
    return torch.as_tensor(value).detach().cpu().to(torch.float64).flatten()


def _noted(by_layer: Mapping[str, Mapping[str, Any]], where: str) -> bool:
    """Whether the values at ``where`` (``"layer"`` or ``"layer[key]"``) carry a ``note`` (text saying why)."""
    note = by_layer.get(where.split("[", 1)[0], {}).get("note")
    return isinstance(note, str) and bool(note.strip())


def check_identity(
    spec: ContractSpec,
    pair_values: Mapping[str, Mapping[str, Any]],
    model_values: tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]]] | None,
    where: str,
    undefined_ok: bool = False,
) -> None:
    """Check the identity expectations (:attr:`ContractSpec.expected_identity`) on the values (layer → key → value)
    of an identical pair.

    A number must hold for every element. A NaN element passes only where the layer's values carry a ``note``
    (text saying why the value is undefined), and then only in a vector that also holds the expected value
    somewhere (a dead channel beside live ones), unless ``undefined_ok``: then a value that is NaN throughout with a
    note passes too (tiny data, where a metric may honestly have nothing to measure).
    """
    for key, expected in (spec.expected_identity or {}).items():
        at = f"{where}: {spec.name}[{key!r}]"
        if expected is SAME:
            if model_values is None:
                raise AssertionError(f"{at}: SAME applies to Scope.MODEL metrics only; give the expected value")
            base = dict(_lookup(model_values[0], key, "compute() of the base"))
            tuned = dict(_lookup(model_values[1], key, "compute() of the tuned model"))
            assert_outputs_close(base, tuned, atol=spec.identity_atol, rtol=0, where=f"{at} base vs tuned")
            continue
        for layer, value in _lookup(pair_values, key, "the pair's values"):
            if callable(expected):
                assert expected(value), f"{at} at layer {layer!r}: {value!r} fails {expected!r}"
                continue
            nums = _numbers(value, at)
            assert nums.numel(), f"{at} at layer {layer!r} is empty: nothing to compare with {expected!r}"
            nan = torch.isnan(nums)
            if bool(nan.any()) and _noted(pair_values, layer) and (undefined_ok or not bool(nan.all())):
                nums = nums[~nan]  # undefined where the metric says why: the rest must be the identity
            off = (nums - float(expected)).abs()
            assert bool((off <= spec.identity_atol).all()), (
                f"{at} at layer {layer!r} should be {expected!r} for identical inputs, got {nums.tolist()[:8]} "
                f"(largest difference {float(off.nan_to_num(float('inf')).max()):.3g}, atol {spec.identity_atol})")


@contextlib.contextmanager
def registered(cls: type[Metric]) -> Iterator[None]:
    """Make ``cls`` reachable by name for a :func:`ftprobe.compare` run (registered locally unless installed)."""
    from ftprobe.core.registry import get_metric, list_metrics, register_metric, unregister_metric

    if cls.name in list_metrics():
        found = get_metric(cls.name)
        if found is not cls:
            pytest.fail(f"an installed distribution provides {cls.name!r} as {found!r}, not the class under test "
                        f"{cls!r}; reinstall your package (pip install -e .) or uninstall the other one")
        yield
        return
    register_metric(cls)
    try:
        yield
    finally:
        unregister_metric(cls.name)


class MetricContract:
    """Contract tests for one metric class; subclass it with ``metric_cls`` (and ``metric_kwargs``, ``identity``).

    To parametrise over several metrics, override the ``contract_spec`` fixture to return :class:`ContractSpec`.
    """

    metric_cls: ClassVar[type[Metric] | None] = None
    metric_kwargs: ClassVar[Mapping[str, Any]] = {}
    identity: ClassVar[Mapping[str, Any] | None] = None
    atol: ClassVar[float] = 1e-6
    rtol: ClassVar[float] = 1e-5
    identity_atol: ClassVar[float] = 1e-6

    @pytest.fixture
    def contract_spec(self) -> ContractSpec:
        cls = type(self).metric_cls
        if cls is None:
            pytest.fail(f"{type(self).__name__} must set `metric_cls = YourMetric`")
        return ContractSpec(cls, dict(self.metric_kwargs), self.identity, self.atol, self.rtol, self.identity_atol)

    # -- declaration ----------------------------------------------------------------------------------------------
    def test_declaration(self, contract_spec: ContractSpec) -> None:
        cls = contract_spec.metric_cls
        assert isinstance(cls, type) and issubclass(cls, Metric), f"{cls!r} is not a subclass of ftprobe.Metric"
        name = getattr(cls, "name", None)
        assert isinstance(name, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name), (
            f"{cls.__qualname__}.name = {name!r}: use letters, digits, '_' and '-' (users type it in --metrics and "
            "-o NAME.KEY=VALUE)")
        assert cls.describe(), f"{name}: give the class a docstring; its first line is shown by `ftprobe metrics`"
        needs = cls.needs
        assert isinstance(needs, Need) and needs & (Need.ACTIVATIONS | Need.WEIGHTS), (
            f"{name}: needs must include Need.ACTIVATIONS or Need.WEIGHTS")
        assert Need.LABELS not in needs or Need.ACTIVATIONS in needs, f"{name}: Need.LABELS needs Need.ACTIVATIONS"
        assert isinstance(cls.scope, Scope) and isinstance(cls.layerwise, bool)
        assert isinstance(cls.pairs_units, bool), (
            f"{name}: pairs_units must be True (it matches unit i with unit i: same architecture only) or False (it "
            "compares whole representations of any widths)")
        if model_scoped(cls):
            assert cls.compare is not Metric.compare, f"{name} is Scope.MODEL: implement compare(base, tuned)"
        metric = cls(**contract_spec.kwargs)
        assert metric.state_names, f"{name}: declare its state with add_state() (merge, reset, resume need it)"
        views = metric.views()
        if Need.ACTIVATIONS in needs:
            assert views and set(views) <= set(VIEWS), f"{name}: views() = {set(views)}; pick from {sorted(VIEWS)}"
        else:
            assert not views, f"{name} reads no activations but views() = {set(views)}; return frozenset()"
        options = metric.options()
        for key, value in contract_spec.kwargs.items():
            assert options.get(key) == value, f"{name}: store option {key!r} as self.{key} so results record it"
        try:
            json.dumps(_to_jsonable(options))
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{name}: options() {options!r} cannot be written to results.json ({exc})") from None

    # -- streaming, merging, reset, resume ------------------------------------------------------------------------
    def test_streaming_equals_one_shot(self, contract_spec: ContractSpec) -> None:
        run, weights = synthetic_run(), tiny_pair()
        if Need.ACTIVATIONS not in contract_spec.metric_cls.needs:
            # A weights-only metric sees no data stream; its analogue is that the pass gives the same values
            # whatever data is streamed beside it (none, a part, all of it).
            alone = Harness(contract_spec, run).feed(run.shards(2)[0], weights).outputs()
            whole = Harness(contract_spec, run).feed(run.joined(), weights).outputs()
            assert_outputs_close(alone, whole, atol=contract_spec.atol, rtol=contract_spec.rtol,
                                 where=f"{contract_spec.name} with part of the data vs all of it")
            return
        streamed = Harness(contract_spec, run).feed(run, weights).outputs()
        one_shot = Harness(contract_spec, run).feed(run.joined(), weights).outputs()
        assert_outputs_close(streamed, one_shot, atol=contract_spec.atol, rtol=contract_spec.rtol,
                             where=f"{contract_spec.name} streamed vs one shot")

    def test_merge_equals_sequential(self, contract_spec: ContractSpec) -> None:
        spec, run, weights = contract_spec, synthetic_run(), tiny_pair()
        full = Harness(spec, run).feed(run, weights).outputs()
        first, second = run.shards(2)
        for a, b, label in ((first, second, "shard 0 + shard 1"), (second, first, "shard 1 + shard 0")):
            merged = Harness(spec, run).feed(a, weights)  # every shard runs the weight pass (same weights)
            merged.merge(Harness(spec, run).feed(b, weights))
            assert_outputs_close(merged.outputs(), full, atol=spec.atol, rtol=spec.rtol, where=f"{spec.name} {label}")
        merged = Harness(spec, run).feed(run, weights)
        merged.merge(Harness(spec, run))
        assert_outputs_close(merged.outputs(), full, atol=spec.atol, rtol=spec.rtol, where=f"{spec.name} + empty")
        merged = Harness(spec, run)
        merged.merge(Harness(spec, run).feed(run, weights))
        assert_outputs_close(merged.outputs(), full, atol=spec.atol, rtol=spec.rtol, where=f"empty + {spec.name}")

    def test_reset(self, contract_spec: ContractSpec) -> None:
        spec, run, weights = contract_spec, synthetic_run(), tiny_pair()
        used = Harness(spec, run).feed(run, weights)
        used.reset()
        assert_outputs_close(used.states(), Harness(spec, run).states(), atol=0, rtol=0,
                             where=f"{spec.name} state after reset() vs a new instance")
        again = used.feed(run, weights).outputs()
        assert_outputs_close(again, Harness(spec, run).feed(run, weights).outputs(), atol=spec.atol, rtol=spec.rtol,
                             where=f"{spec.name} reused after reset() vs a new instance")

    def test_state_round_trip(self, contract_spec: ContractSpec) -> None:
        spec, run, weights = contract_spec, synthetic_run(), tiny_pair()
        head, tail = run.prefix(2)
        saved = Harness(spec, run).feed(head, weights)
        buf = io.BytesIO()
        torch.save(saved.states(), buf)

        def load() -> Any:
            buf.seek(0)
            try:
                return torch.load(buf, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - say what the author must change
                pytest.fail(f"{spec.name}: state_dict() must hold only tensors, numbers and lists/tuples/dicts of "
                            f"them (torch.load(weights_only=True) refused it: {exc})")

        restored = Harness(spec, run)
        restored.load(load())
        assert_outputs_close(restored.outputs(), saved.outputs(), atol=0, rtol=0, where=f"{spec.name} reloaded state")
        resumed = Harness(spec, run)
        resumed.load(load())
        resumed.feed(tail)
        assert_outputs_close(resumed.outputs(), Harness(spec, run).feed(run, weights).outputs(), atol=spec.atol,
                             rtol=spec.rtol, where=f"{spec.name} resumed from a checkpoint vs uninterrupted")

    # -- sanity and declared needs ----------------------------------------------------------------------------------
    def test_identical_pair(self, contract_spec: ContractSpec) -> None:
        spec = contract_spec
        if spec.expected_identity is None:
            pytest.fail(f"{type(self).__name__}: declare `identity` (key -> value expected when base and tuned are "
                        "identical, e.g. {'cka': 1.0}) on the metric class (Metric.identity) or on this test class, "
                        "or `identity = {}` to only check that they compute")
        run, model = synthetic_run(identical=True), TinyNet(width=4)
        out = Harness(spec, run).feed(run, (model, copy.deepcopy(model))).outputs()
        if model_scoped(spec.metric_cls):
            check_identity(spec, out["compare"], (out["compute"]["base"], out["compute"]["tuned"]), "identical pair")
        else:
            check_identity(spec, out["compute"]["pair"], None, "identical pair")

    def test_needs_honoured(self, contract_spec: ContractSpec) -> None:
        spec, run = contract_spec, synthetic_run()
        needs = spec.metric_cls.needs
        if Need.ACTIVATIONS not in needs:  # weights only: it computes from weights alone, and they matter
            model = TinyNet(width=4)
            moved = Harness(spec, run).feed(run, tiny_pair()).outputs()
            same = Harness(spec, run).feed(run, (model, copy.deepcopy(model))).outputs()
            assert not outputs_close(moved, same, atol=spec.atol, rtol=spec.rtol), (
                f"{spec.name} declares Need.WEIGHTS but gives the same results for identical and perturbed weights")
        elif Need.LABELS not in needs:
            plain = Harness(spec, run, labels=False).feed(run, tiny_pair()).outputs()
            labelled = Harness(spec, run, labels=True).feed(run, tiny_pair()).outputs()
            assert_outputs_close(plain, labelled, atol=spec.atol, rtol=spec.rtol,
                                 where=f"{spec.name} does not declare Need.LABELS, yet labels changed its results")
        else:
            g = torch.Generator().manual_seed(7)
            labels = torch.cat([b.labels for b in run.batches])
            scrambled = run.with_labels(labels[torch.randperm(labels.numel(), generator=g)])
            real = Harness(spec, run).feed(run, tiny_pair()).outputs()
            other = Harness(spec, run).feed(scrambled, tiny_pair()).outputs()
            assert not outputs_close(real, other, atol=spec.atol, rtol=spec.rtol), (
                f"{spec.name} declares Need.LABELS but gives the same results with shuffled labels; if it does not "
                "use labels, drop Need.LABELS (it is then skipped on unlabelled data for nothing)")

    def test_reads_only_declared_views(self, contract_spec: ContractSpec) -> None:
        spec, run, log = contract_spec, synthetic_run(), ViewLog()
        harness = Harness(spec, run)
        declared = set(harness.views())
        try:
            harness.feed(run, tiny_pair(), log=log).outputs()
        except KeyError:  # the Activation's own error for a view that is not there; reported below
            if not log.missing:
                raise
        assert not log.missing, (f"{spec.name} read view(s) {sorted(log.missing)} that views() does not declare "
                                 f"({sorted(declared)}): the engine computes only declared views; add them")
        assert log.read == declared, (f"{spec.name} declares views {sorted(declared - log.read)} it never reads; "
                                      "drop them from views() (each one is computed for every batch)")
        assert not log.modified(), f"{spec.name} modified shared views in place: {log.modified()}; work on a copy"

    # -- the real engine ----------------------------------------------------------------------------------------------
    def test_runs_in_compare(self, contract_spec: ContractSpec) -> None:
        import ftprobe

        spec = contract_spec
        base, tuned = tiny_pair()
        with registered(spec.metric_cls):
            result = ftprobe.compare(
                base, tuned, copy.deepcopy(base), labels=["base", "tuned", "twin"], data=TinyImages(n=24, size=16),
                layers=list(LAYERS), metrics={spec.name: dict(spec.kwargs)}, batch_size=8, size=16,
                preprocess="none", device="cpu",
            )
        values = [v for v in result.values if v.metric == spec.name]

        def by_layer(keep: Callable[[Any], bool]) -> dict[str, dict[str, Any]]:
            return {v.layer: {**v.scalars, **v.arrays} for v in values if keep(v)}

        moved = by_layer(lambda v: v.scope == "pair" and v.tuned == "tuned")
        twin = by_layer(lambda v: v.scope == "pair" and v.tuned == "twin")
        expected = set(LAYERS) if spec.metric_cls.layerwise else set()
        assert moved and expected <= set(moved), f"{spec.name}: compare() gave pair values for {sorted(moved)}"
        models = None
        if model_scoped(spec.metric_cls):
            models = (by_layer(lambda v: v.model == "base"), by_layer(lambda v: v.model == "twin"))
        check_identity(spec, twin, models, "ftprobe.compare(base, copy of base)")
        json.loads(result.to_json())
