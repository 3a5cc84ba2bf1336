"""The one pass: every model runs once per batch, every metric is fed from the same captured views.

The engine resolves and checks layers, runs the models and captures views; what each metric is fed, and which values
it returns, is the plan's (:mod:`ftprobe.core.plan`): the batch loop only hands it the views. Everything that can
fail because of user input fails in :meth:`Engine.prepare`, before any data is read.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .capture import Capture, LayerPlan, evaluating, split_call
from .checkpoint import Checkpointer, RunPosition
from .errors import DataError, FtprobeError, ModelMismatch
from .intervals import Resampling
from .layers import LayerInfo, ResolvedLayer, natural_layers, probe, resolve_layers
from .metric import Activation, Metric, RunContext
from .plan import MetricRequest, Plan, Topology, needs_activations
from .results import Result, Value

__all__ = ["Engine", "MetricRequest", "ModelEntry"]

Notice = Callable[[str], None]


@dataclass
class ModelEntry:
    """A model taking part in a comparison."""

    label: str
    module: nn.Module
    info: dict[str, Any] = field(default_factory=dict)  # provenance (spec, path, sha256, head ...)


def _sync_free_count(t: Tensor) -> Tensor:
    return (~torch.isfinite(t)).sum()


def module_tree(model: nn.Module) -> tuple[tuple[str, str], ...]:
    """A model's architecture as ftprobe compares it: every module path with its class name (not the shapes, so a
    replaced head or another width is the same tree)."""
    return tuple((n, type(m).__name__) for n, m in model.named_modules())


def _is_head_layer(entry: ModelEntry, name: str, shape: tuple[int, ...] | None) -> bool:
    """Whether ``name`` is (inside) a classification head: the head the loader reported as replaced, or a layer with
    one vector per image that is or holds an ``nn.Linear`` (a head replaced in code)."""
    path = split_call(name)[0]
    head = entry.info.get("head") or {}
    for h in [head.get("module"), *head.get("modules", [])]:
        if h and (path == h or path.startswith(h + ".")):
            return True
    if shape is None or sum(d > 1 for d in shape) > 1:
        return False
    module = dict(entry.module.named_modules()).get(path)
    return module is not None and any(isinstance(m, nn.Linear) for m in module.modules())


class Engine:
    """Plan and run a comparison.

    Args:
        models: the base first, then the tuned models.
        pairs: index pairs into ``models`` (base, tuned).
        layers: what the user typed (names, globs, aliases); empty → the architecture's natural layers.
        metrics: the metrics to run (their needs are assumed met; see :func:`ftprobe.compare`).
        tuned_layers: model index (1, 2 ...) → that model's own layer specs, for models of another architecture (or
            other layers of the same one). A model without an entry takes ``layers`` when its module tree is the
            base's, else its own natural layers (when ``layers`` is empty) or an error asking for its layers.
        device: where models and metric states live.
        input_size: the image size of the probe forward (None: the model's default, else 224).
        resampling: make intervals over groups of images (see :mod:`ftprobe.core.intervals`); None: none.

    Layer lists of equal length pair layer i of one model with layer i of the other: layerwise metrics run on those
    pairs, under the base's (model 0's) names. Lists of different lengths are not paired: only metrics that see all
    layers at once and compare whole representations (``pairs_units = False``, e.g. ``cka``'s cross-layer matrix)
    run; they receive each model's layers under its own names. A metric with ``pairs_units = True`` (the default)
    runs only on pairs of the same architecture compared on the same layers.
    """

    def __init__(
        self,
        models: Sequence[ModelEntry],
        pairs: Sequence[tuple[int, int]],
        layers: Sequence[str],
        metrics: Sequence[MetricRequest],
        *,
        tuned_layers: Mapping[int, Sequence[str]] | None = None,
        device: torch.device | str = "cpu",
        input_size: int | None = None,
        notice: Notice | None = None,
        resampling: Resampling | None = None,
    ) -> None:
        self.models = list(models)
        self.pairs = list(pairs)
        self.layer_specs = list(layers)
        self.tuned_specs = {int(m): list(s) for m, s in (tuned_layers or {}).items() if s}
        self.requests = list(metrics)
        self.device = torch.device(device)
        self.input_size = input_size
        self.notice = notice or (lambda msg: None)
        self.resampling = resampling
        self.layers: list[ResolvedLayer] = []  # the base's (model 0's)
        self.model_layers: list[list[ResolvedLayer]] = []  # every model's, in its own names
        self.paired = True  # every model has as many layers as the base: layer i pairs with layer i
        self.names: list[dict[str, str]] = []  # per model: layer key (the base's name when paired) -> its own name
        self.plan = Plan(Topology([], [], [], [], [], [], True, []), self.notice)  # built by prepare()
        self.warnings: list[str] = []
        self.skipped: list[dict[str, str]] = []  # metrics left out because the models cannot be paired unit by unit
        self._infos: list[list[LayerInfo]] = []
        self._trees: list[tuple[tuple[str, str], ...]] = []
        self._same_arch: list[bool] = []  # per model: the base's architecture where the compared layers are
        self._units: dict[tuple[int, int], bool] = {}  # pair -> same architecture, same layers
        self._widths_differ: dict[tuple[int, int], list[str]] = {}  # pair -> layer keys of another shape (heads)

    # -- planning -------------------------------------------------------------------------------------------------
    def prepare(self, data_ctx: RunContext | None = None) -> None:
        """Resolve layers on every model, check shapes agree, build and set up metric instances."""
        for entry in self.models:
            entry.module.to(self.device)
        self._infos = [probe(e.module, self.input_size, self.device) for e in self.models]
        self._trees = [module_tree(e.module) for e in self.models]
        self.model_layers, self._same_arch = [], []
        for m in range(len(self.models)):  # the base first: a tuned model's error message quotes its layers
            self.model_layers.append(self._resolve(m))
            self.layers = self.model_layers[0]
        self.paired = all(len(res) == len(self.layers) for res in self.model_layers)
        if self.paired:
            self.names = [{a.name: b.name for a, b in zip(self.layers, res)} for res in self.model_layers]
        else:
            self.names = [{r.name: r.name for r in res} for res in self.model_layers]
            counts = ", ".join(f"{e.label}: {len(r)}" for e, r in zip(self.models, self.model_layers))
            self.notice(f"the layer lists differ in length ({counts}), so layers are not paired: only metrics that "
                        "compare every layer of one model with every layer of the other run (cka: the cross-layer "
                        "matrix); pass lists of equal length to pair layer i with layer i")
        for pair in self.pairs:
            self._check_pair(*pair)
        self._plan(data_ctx or RunContext())

    def _resolve(self, m: int) -> list[ResolvedLayer]:
        """Model ``m``'s layers: its own specs, the base's (same architecture), or its natural layers."""
        entry, infos = self.models[m], self._infos[m]
        other_arch = m > 0 and not self._fits_base(m)
        self._same_arch.append(not other_arch)
        if m in self.tuned_specs:
            specs = self.tuned_specs[m]
        elif other_arch and self.layer_specs:
            raise ModelMismatch(self._other_arch_message(m))
        elif other_arch or not self.layer_specs:
            specs = natural_layers(entry.module, infos)
            if not specs:
                flag = "--tuned-layers" if m else "--layers"
                raise ModelMismatch(f"no natural layers known for {type(entry.module).__name__} ({entry.label}); "
                                    f"pass {flag}")
            if m == 0:
                self.notice("layers not given; using the natural blocks: " + ", ".join(specs))
            elif other_arch:
                self.notice(f"{entry.label} ({type(entry.module).__name__}) is another architecture than "
                            f"{self.models[0].label} (its module tree differs); using its natural blocks: "
                            + ", ".join(specs))
        else:
            specs = self.layer_specs
        return resolve_layers(entry.module, specs, infos, label=entry.label)

    def _fits_base(self, m: int) -> bool:
        """Whether model ``m`` is the base's architecture where it is compared: the same module tree, or one that
        differs only outside the base's layers (auxiliary heads saved by one and not the other, a head replaced in
        code), with the same modules inside each of those layers."""
        if self._trees[m] == self._trees[0]:
            return True
        base_layers = self.model_layers[0] if self.model_layers else []
        if not base_layers:
            return False
        entry = self.models[m]
        try:
            mine = resolve_layers(entry.module, [r.name for r in base_layers], self._infos[m], label=entry.label)
        except FtprobeError:
            return False

        def inside(tree: tuple[tuple[str, str], ...], name: str) -> list[tuple[str, str]]:
            path = split_call(name)[0]
            return [(p[len(path):], t) for p, t in tree if p == path or p.startswith(path + ".")]

        return all(a.name == b.name and inside(self._trees[0], a.name) == inside(self._trees[m], b.name)
                   for a, b in zip(base_layers, mine))

    def _same(self, b: int, t: int) -> bool:
        return self._same_arch[b] and self._same_arch[t]

    def _other_arch_message(self, m: int) -> str:
        base, entry = self.models[0], self.models[m]
        fix = (f"to compare different architectures, name {entry.label}'s layers too: --layers for the base and "
               "--tuned-layers for the tuned models (tuned_layers= in Python); `ftprobe layers MODEL` lists them")
        try:
            mine = resolve_layers(entry.module, self.layer_specs, self._infos[m], label=entry.label)
        except FtprobeError as exc:
            return f"{exc} {entry.label} has another architecture than {base.label}: {fix}"
        for a, b in zip(self.layers, mine):
            if a.shape != b.shape:
                return (f"layer {a.name!r} has output shape {a.shape} in {base.label} but {b.shape} in {entry.label}: "
                        f"the models differ in architecture (their module trees differ); {fix}")
        mine_paths = dict(self._trees[m])
        odd = next((p for p, t in self._trees[0] if mine_paths.get(p) != t), None)
        odd = odd or next(p for p, _ in self._trees[m] if p not in dict(self._trees[0]))
        return (f"{entry.label} has another architecture than {base.label} (their module trees differ, e.g. at "
                f"{odd!r}); {fix}, the same names if you mean them: --tuned-layers {' '.join(self.layer_specs)}")

    def _check_pair(self, b: int, t: int) -> None:
        """Whether a pair's units correspond one to one; refuse shapes that differ where no head explains it."""
        mb, mt = self.models[b], self.models[t]
        shapes = [{r.name: r.shape for r in self.model_layers[i]} for i in (b, t)]
        units = self.paired and self._same(b, t) and self.names[b] == self.names[t]
        differ = []
        if self.paired:
            for key in self.names[0]:
                nb, nt = self.names[b][key], self.names[t][key]
                if shapes[0][nb] != shapes[1][nt]:
                    differ.append(key)
        chosen_layers = b in self.tuned_specs or t in self.tuned_specs or not self._same(b, t)
        needs_acts = needs_activations(self.requests)
        for key in differ if units else []:
            nb, nt = self.names[b][key], self.names[t][key]
            what = (f"layer {key!r} has output shape {shapes[0][nb]} in {mb.label} but {shapes[1][nt]} in "
                    f"{mt.label}")
            heads = _is_head_layer(mb, nb, shapes[0][nb]) and _is_head_layer(mt, nt, shapes[1][nt])
            if not needs_acts or heads:
                self.notice(f"{what}: a replaced head, compared by the metrics that allow other widths (cka); "
                            "metrics that pair channels leave it out" if needs_acts and heads else
                            f"{what}: weight metrics only (a replaced head is reported as replaced)")
            elif not chosen_layers:
                raise ModelMismatch(
                    f"{what} (as {nt!r}); the models differ in architecture or input size. To compare different "
                    "architectures on purpose, name the tuned model's layers with --tuned-layers (tuned_layers=)"
                )
        self._units[(b, t)] = units
        self._widths_differ[(b, t)] = differ if units else []

    def _plan(self, ctx: RunContext) -> None:
        """The feeds of the metrics these models and this data can serve (see :mod:`ftprobe.core.plan`)."""
        topo = Topology(
            labels=[e.label for e in self.models], pairs=self.pairs, layers=[r.name for r in self.layers],
            names=self.names, shapes=[{r.name: r.channels_first_shape for r in res} for res in self.model_layers],
            counts=[len(r) for r in self.model_layers], paired=self.paired, same_arch=self._same_arch,
            units=self._units, widths_differ=self._widths_differ, device=str(self.device),
        )
        self.plan = Plan(topo, self.notice, self.resampling).build(self.requests, ctx)
        self.requests = self.plan.requests
        self.skipped = self.plan.skipped

    # -- running --------------------------------------------------------------------------------------------------
    @property
    def needs_data(self) -> bool:
        return self.plan.needs_data

    def _layer_plans(self) -> list[dict[str, LayerPlan]]:
        """What each model's capture keeps: per layer (its own name) the views the feeds read, its layout rule."""
        info_by_name = [{i.name: i for i in infos} for infos in self._infos]
        plans = []
        for m, per_layer in enumerate(self.plan.views()):
            layouts = {r.name: r.layout for r in self.model_layers[m]}  # each model's own rule (a CNN and a ViT)
            names = {key: self.names[m][key] for key in per_layer}
            plans.append({names[k]: LayerPlan(frozenset(vs), layouts[names[k]], info_by_name[m][names[k]].inplace)
                          for k, vs in per_layer.items()})
        return plans

    # -- state of the pass (checkpoint / resume / distributed merge) ---------------------------------------------
    def owners(self) -> list[Metric]:
        """The metric instances that hold state (shared-state followers excluded), in a fixed order."""
        return self.plan.owners()

    def dump_states(self) -> list[dict[str, Any]]:
        return self.plan.dump_states()

    def load_states(self, states: list[dict[str, Any]]) -> None:
        self.plan.load_states(states)

    def run(
        self,
        batches: Any,
        *,
        progress: Callable[[int], None] | None = None,
        checkpoint: Checkpointer | None = None,
        start: RunPosition | None = None,
        amp: str | None = None,
    ) -> dict[str, Any]:
        """Run the weight metrics, then stream ``batches`` (``Batch(x, labels, index)``) once through every model.

        Returns run statistics; metric states are left in the slots for :meth:`result`. A KeyboardInterrupt stops
        the pass and keeps what was accumulated (``interrupted`` is True), saved to ``checkpoint`` when given.

        Args:
            checkpoint: save the states every ``checkpoint.every`` batches and on interruption.
            start: the position a resumed run starts from (its states already loaded).
            amp: ``"bf16"`` or ``"fp16"`` to run the forwards under autocast; metric statistics stay float64.
        """
        t0 = time.perf_counter()
        pos = dataclasses.replace(start) if start is not None else RunPosition()
        interrupted = False
        self.plan.feed_weights([e.module for e in self.models])
        if not self.needs_data:
            return {"samples": pos.samples, "batches": pos.batches, "interrupted": False,
                    "duration_s": time.perf_counter() - t0}
        plans = self._layer_plans()
        order = [{i.name: k for k, i in enumerate(infos)} for infos in self._infos]
        captures = []
        for m, entry in enumerate(self.models):
            if not plans[m]:
                captures.append(None)
                continue
            stop = max(plans[m], key=lambda n: order[m][n])
            captures.append(Capture(entry.module, plans[m], stop_after=stop))
        nonfinite: dict[tuple[int, str], Tensor] = {}
        modules = [e.module for e in self.models]
        try:
            with ExitStack() as stack:
                stack.enter_context(evaluating(*modules))
                stack.enter_context(torch.inference_mode())
                for cap in captures:
                    if cap is not None:
                        stack.enter_context(cap.attached())  # removed on success, error and Ctrl-C alike
                if amp:
                    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
                    stack.enter_context(torch.autocast(self.device.type, dtype=dtype))
                last_batch_index = None  # not the batch itself: its images must not outlive the step
                for batch in batches:
                    n = self._step(batch, captures, nonfinite)
                    pos.advance(n)
                    last_batch_index = batch.index
                    del batch  # so the images are freed before the next batch is read, not after
                    if progress is not None:
                        progress(n)
                    if checkpoint is not None and checkpoint.every and pos.batches % checkpoint.every == 0:
                        pos.seen(last_batch_index)
                        checkpoint.save(pos, self.dump_states())
                        last_batch_index = None
        except KeyboardInterrupt:
            interrupted = True
            msg = f"interrupted after {pos.samples} samples: the values below cover only those samples"
            if checkpoint is not None:
                pos.seen(last_batch_index)
                f = checkpoint.save(pos, self.dump_states())
                msg += f"; the partial state is saved in {f}: run the same command with --resume to continue"
            self.warnings.append(msg)
        for (m, layer), count in nonfinite.items():
            c = int(count)
            if c:
                self.warnings.append(
                    f"{c} non-finite values (NaN or Inf) in {self.models[m].label} at layer {layer}; "
                    "its values there are unreliable"
                )
        if pos.samples == 0 and not interrupted and start is None:
            raise DataError("the data source yielded no samples; check the path, --limit and unreadable files")
        return {"samples": pos.samples, "batches": pos.batches, "interrupted": interrupted,
                "duration_s": time.perf_counter() - t0, "last_index": pos.last_index}

    def _step(self, batch: Any, captures: list[Capture | None], nonfinite: dict) -> int:
        x = batch.x.to(self.device, non_blocking=True)
        n = x.shape[0]
        if n == 0:
            return 0
        index = batch.index.to(self.device, non_blocking=True)
        if index.shape[0] != n:
            raise DataError(f"a batch carries {index.shape[0]} sample indices for {n} images")
        labels = batch.labels.to(self.device, non_blocking=True) if batch.labels is not None else None
        acts: list[dict[str, Activation]] = []
        for m, cap in enumerate(captures):
            if cap is None:
                acts.append({})
                continue
            try:
                store = cap.run(x)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise DataError(
                    f"{self.models[m].label} cannot take a batch of shape {tuple(x.shape)} (the probe used "
                    f"{self.input_size or 'the model default'} px images): {type(exc).__name__}: {exc}. Check the "
                    "image size (--size), the channel count and the preprocessing of the data"
                ) from exc
            per_layer = {}
            for layer, name in self.names[m].items():
                if name not in cap.plans:
                    continue
                if name not in store:
                    raise ModelMismatch(
                        f"layer {name!r} of {self.models[m].label} did not run in this batch's forward; "
                        "the model takes a data-dependent path: pick layers that always run"
                    )
                views = store[name]
                first = next(iter(views.values()))
                if first.shape[0] != n:  # the same samples, in the same order, for every model
                    raise ModelMismatch(
                        f"layer {name!r} of {self.models[m].label} returned {first.shape[0]} samples for a batch of "
                        f"{n}; ftprobe needs batch-first outputs"
                    )
                key = (m, layer)
                nonfinite[key] = nonfinite.get(key, 0) + _sync_free_count(first)
                per_layer[layer] = Activation(layer, views)
            acts.append(per_layer)
        self.plan.feed(acts, index, labels)
        return n

    # -- results --------------------------------------------------------------------------------------------------
    def values(self) -> list[Value]:
        """Compute every metric (sharing states where declared) and return the values."""
        return self.plan.values()

    def layer_records(self) -> list[dict[str, Any]]:
        """How each layer name was resolved, for the result's provenance."""
        def record(r: ResolvedLayer) -> dict[str, Any]:
            return {"spec": r.spec, "name": r.name, "alias": r.via_alias, "shape": list(r.shape or ()),
                    "layout": r.layout, "inplace_after": r.inplace}

        recs = []
        if not self.paired:  # each model's own layers; the tuned models' records say whose they are
            recs = [record(r) for r in self.layers]
            for entry, res in zip(self.models[1:], self.model_layers[1:]):
                recs.extend({**record(r), "model": entry.label} for r in res)
            return recs
        for i, r in enumerate(self.layers):
            rec = record(r)
            per_model = {self.models[m].label: self.names[m][r.name] for m in range(len(self.models))}
            if len(set(per_model.values())) > 1:
                rec["per_model"] = per_model
            shapes = {self.models[m].label: list(res[i].shape or ()) for m, res in enumerate(self.model_layers)}
            if any(s != rec["shape"] for s in shapes.values()):
                rec["per_model_shape"] = shapes  # a replaced head, or another architecture: channels per model
            recs.append(rec)
        return recs

    def metric_records(self) -> dict[str, dict[str, Any]]:
        return self.plan.metric_records()

    def result(self, stats: Mapping[str, Any], **extra: Any) -> Result:
        return Result(
            models=[{**e.info, "label": e.label} for e in self.models],
            pairs=[(self.models[b].label, self.models[t].label) for b, t in self.pairs],
            layers=self.layer_records(),
            metrics=self.metric_records(),
            values=self.values(),
            warnings=list(self.warnings),
            run={"device": str(self.device), **stats, **extra.pop("run", {})},
            resampling=self.plan.resampling_record(),
            **extra,
        )
