"""The plan of a run: which metric instances exist, what each is fed, and which values each returns.

This is the only code that reads what kind of metric it holds (``scope``, ``layerwise``, ``needs``, ``pairs_units``,
``state_key``). It turns the selected metrics into typed feeds:

* :class:`PairFeed`: one instance per (base, tuned) pair, fed a :class:`PairStep` per batch;
* :class:`WeightFeed`: a pair feed that first receives a :class:`WeightStep` per layer (and batches too when the
  metric also reads activations);
* :class:`ModelFeed`: one instance per model (``Scope.MODEL``), fed a :class:`ModelStep`; a :class:`Comparison`
  turns the two model feeds of a pair into the pair's values with ``compare``.

Each feed builds its own step for a batch and its own values at the end: the engine's batch loop only feeds them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .capture import split_call
from .errors import MetricNeedsError, PluginError
from .intervals import GroupCounts, Resampling, group_of, headline_keys, jackknife_interval, leave_one_out, merge_states
from .metric import Activation, Metric, ModelStep, Need, PairStep, RunContext, Scope, WeightStep, state_to
from .registry import get_metric, list_metrics, metric_specs
from .results import Value, split_values

__all__ = ["Comparison", "Feed", "MetricRequest", "ModelFeed", "PairFeed", "Plan", "Topology", "WeightFeed",
           "model_scoped", "needs_activations", "select_metrics", "unmet_needs"]

Pair = tuple[int, int]
Acts = Sequence[Mapping[str, Activation]]  # per model: layer key -> its views in this batch
MetricsArg = str | Sequence[str] | Mapping[str, Mapping[str, Any]] | None


def model_scoped(cls: type[Metric]) -> bool:
    """Whether a metric keeps one instance per model and gives pair values through ``compare`` (``Scope.MODEL``, not
    a weight metric: one that reads weights always sees both models' modules at once)."""
    return cls.scope == Scope.MODEL and Need.WEIGHTS not in cls.needs


def unmet_needs(cls: type[Metric], *, has_data: bool, has_labels: bool) -> list[str]:
    """What a metric needs that the run does not have (empty: nothing), in words for the user."""
    missing = []
    if Need.ACTIVATIONS in cls.needs and not has_data:
        missing.append("data (--data PATH)")
    if Need.LABELS in cls.needs and not has_labels:
        missing.append("labelled data (class sub-folders, or a CSV with a label column)")
    return missing


@dataclass
class MetricRequest:
    """A metric class with its options, as chosen by the user."""

    name: str
    cls: type[Metric]
    options: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    version: str = ""
    explicit: bool = False  # named by the user (not reached by default or a glob): refusing it stops the run


def _check_options(name: str, cls: type[Metric], options: Mapping[str, Any]) -> None:
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    unknown = [k for k in options if k not in params]
    if unknown:
        raise MetricNeedsError(
            f"metric {name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
            + (", ".join(accepted) or "none")
        )


def select_metrics(
    metrics: MetricsArg,
    options: Mapping[str, Mapping[str, Any]] | None,
    *,
    has_data: bool,
    has_labels: bool,
    disabled: Collection[str] = (),
    notice: Callable[[str], None] = lambda m: None,
) -> tuple[list[MetricRequest], list[dict[str, str]]]:
    """Turn the user's metric selection into requests; skip (with a notice) or refuse metrics whose needs are unmet.

    A metric named explicitly whose needs are not met is an error; one reached by default or by a glob is skipped.
    """
    options = {k: dict(v) for k, v in (options or {}).items()}
    if metrics is None:
        patterns, explicit_opts = ["*"], {}
    elif isinstance(metrics, str):
        patterns, explicit_opts = [p.strip() for p in metrics.split(",") if p.strip()], {}
    elif isinstance(metrics, Mapping):
        patterns, explicit_opts = list(metrics), {k: dict(v or {}) for k, v in metrics.items()}
    else:
        patterns, explicit_opts = list(metrics), {}
    available = list_metrics("*", disabled=disabled)
    chosen: list[tuple[str, bool]] = []
    for pat in patterns:
        is_glob = any(c in pat for c in "*?[")
        hits = [n for n in available if fnmatch.fnmatchcase(n, pat)] if is_glob else [pat]
        if is_glob and not hits:
            raise MetricNeedsError(f"--metrics {pat!r} matches no installed metric; run `ftprobe metrics`")
        for h in hits:
            if h not in [c[0] for c in chosen]:
                chosen.append((h, not is_glob and metrics is not None))
    specs = metric_specs(disabled)
    requests, skipped = [], []
    for name, explicit in chosen:
        try:
            cls = get_metric(name, disabled=disabled)
        except PluginError as exc:
            if explicit:
                raise
            skipped.append({"metric": name, "reason": str(exc)})  # a broken plugin does not stop the others
            notice(f"skipped {exc}")
            continue
        missing = unmet_needs(cls, has_data=has_data, has_labels=has_labels)
        if missing:
            msg = f"metric {name!r} needs " + " and ".join(missing)
            if explicit:
                raise MetricNeedsError(msg + "; provide it or leave the metric out of --metrics")
            skipped.append({"metric": name, "reason": msg})
            notice(f"skipped {msg}")
            continue
        accepted = set(inspect.signature(cls.__init__).parameters)
        opts: dict[str, Any] = {}
        for pat, o in options.items():
            if pat == name:
                opts.update(o)
            elif any(c in pat for c in "*?[") and fnmatch.fnmatchcase(name, pat):
                opts.update({k: v for k, v in o.items() if k in accepted})  # a glob sets only what a metric takes
        opts.update(explicit_opts.get(name, {}))
        _check_options(name, cls, opts)
        spec = specs[name]
        requests.append(MetricRequest(name, cls, opts, spec.provider, spec.version, explicit=explicit))
    if not requests:
        raise MetricNeedsError(
            "no metric can run with what was given: " + "; ".join(s["reason"] for s in skipped)
            if skipped else "no metric selected"
        )
    return requests, skipped


def needs_activations(requests: Sequence[Any]) -> bool:
    """Whether any of the metric requests reads activations (so shapes must agree where no head explains it)."""
    return any(Need.ACTIVATIONS in r.cls.needs for r in requests)


@dataclass
class Topology:
    """What the engine learnt about the models' layers, as the plan needs it.

    ``layers`` are the layer keys (the base's names); ``names[m]`` maps a key to model ``m``'s own layer name;
    ``shapes[m]`` maps model ``m``'s layer names to their channels-first shapes.
    """

    labels: list[str]
    pairs: list[Pair]
    layers: list[str]
    names: list[dict[str, str]]
    shapes: list[dict[str, tuple[int, ...]]]
    counts: list[int]  # how many layers each model has
    paired: bool  # layer i of every model pairs with layer i of the base
    same_arch: list[bool]
    units: dict[Pair, bool] = field(default_factory=dict)  # same architecture, same layers: units correspond
    widths_differ: dict[Pair, list[str]] = field(default_factory=dict)  # layer keys of another width (heads)
    device: str = "cpu"

    def same(self, b: int, t: int) -> bool:
        return self.same_arch[b] and self.same_arch[t]


def _values(name: str, layer: str | None, vals: Mapping[str, Any], kw: dict[str, Any]) -> list[Value]:
    """A metric's output as result values: one layer's, or (a metric of all layers) one per layer."""
    per_layer = {layer: vals} if layer is not None else vals
    out = []
    for lay, sub in per_layer.items():
        scalars, arrays = split_values(sub)
        out.append(Value(name, lay, scalars=scalars, arrays=arrays, **kw))
    return out


@dataclass
class Feed:
    """One metric instance and what it is fed: ``layer`` None means all layers at once."""

    request: Any  # a MetricRequest
    metric: Metric
    layer: str | None
    owner: Feed | None = None  # another feed whose state this one shares (it is not fed itself)
    batches: bool = False  # fed a step per batch
    # With intervals: one replica per group of images (fed that group's images), how the groups are formed, and a
    # spare instance that computes the leave-one-group-out values (followers have a spare, not replicas).
    replicas: list[Metric] = field(default_factory=list)
    unit: str | None = None
    spare: Metric | None = None

    @property
    def name(self) -> str:
        return self.request.name

    def share_key(self) -> Hashable | None:
        key = self.metric.state_key()
        return None if key is None else (key, self.layer, self.target())

    def target(self) -> Hashable:
        raise NotImplementedError

    def models(self) -> tuple[int, ...]:
        """The models whose activations this feed reads."""
        raise NotImplementedError

    def step(self, acts: Acts, index: Tensor, labels: Tensor | None) -> Any:
        raise NotImplementedError

    def scope(self, labels: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def values(self, labels: Sequence[str]) -> list[Value]:
        return _values(self.name, self.layer, self.metric.compute(), self.scope(labels))


@dataclass
class PairFeed(Feed):
    pair: Pair = (0, 1)

    def target(self) -> Hashable:
        return ("pair", self.pair)

    def models(self) -> tuple[int, ...]:
        return self.pair

    def step(self, acts: Acts, index: Tensor, labels: Tensor | None) -> PairStep:
        b, t = (acts[m] if self.layer is None else acts[m][self.layer] for m in self.pair)
        return PairStep(self.layer, b, t, index, labels)

    def scope(self, labels: Sequence[str]) -> dict[str, Any]:
        return dict(scope="pair", base=labels[self.pair[0]], tuned=labels[self.pair[1]])


@dataclass
class WeightFeed(PairFeed):
    """A pair feed of a metric that reads weights: one :class:`WeightStep` per layer before the batches."""

    def feed_weights(self, modules: Sequence[nn.Module], topo: Topology) -> None:
        b, t = self.pair
        mods = [dict(modules[i].named_modules()) for i in (b, t)]
        for layer in [self.layer] if self.layer else topo.layers:
            bname, tname = topo.names[b][layer], topo.names[t][layer]
            self.metric.update(WeightStep(layer, mods[0][split_call(bname)[0]], mods[1][split_call(tname)[0]]))


@dataclass
class ModelFeed(Feed):
    """One model's instance of a model-scoped metric; the pair values come from a :class:`Comparison`."""

    model: int = 0

    def target(self) -> Hashable:
        return ("model", self.model)

    def models(self) -> tuple[int, ...]:
        return (self.model,)

    def step(self, acts: Acts, index: Tensor, labels: Tensor | None) -> ModelStep:
        a = acts[self.model]
        return ModelStep(self.layer, a[self.layer] if self.layer is not None else a, index, labels)

    def scope(self, labels: Sequence[str]) -> dict[str, Any]:
        return dict(scope="model", model=labels[self.model])


@dataclass
class Comparison:
    """A pair's values of a model-scoped metric: ``compare`` over the base's and the tuned model's feeds."""

    base: ModelFeed
    tuned: ModelFeed

    def values(self, labels: Sequence[str]) -> list[Value]:
        vals = self.base.metric.compare(self.base.metric, self.tuned.metric)
        kw = dict(scope="pair", base=labels[self.base.model], tuned=labels[self.tuned.model])
        return _values(self.base.name, self.base.layer, vals, kw)


def _key(v: Value) -> tuple:
    return (v.metric, v.layer, v.scope, v.base, v.tuned, v.model)


class Plan:
    """The metrics a run keeps, as feeds: built (and set up) by :meth:`build`, which leaves out, with a notice, a
    metric these models or this data cannot serve, and refuses one the user named."""

    def __init__(self, topo: Topology, notice: Callable[[str], None], resampling: Resampling | None = None) -> None:
        self.topo = topo
        self.notice = notice
        self.resampling = resampling
        self.counter: GroupCounts | None = None  # with intervals: the images and batches each group received
        self.requests: list[Any] = []
        self.feeds: list[Feed] = []
        self.comparisons: list[Comparison] = []
        self.notes: dict[str, list[str]] = {}
        self.skipped: list[dict[str, str]] = []

    # -- which metrics can run --------------------------------------------------------------------------------------
    def cannot_run(self, cls: type[Metric]) -> str | None:
        """Why a metric cannot run on these models' layers (None: it can)."""
        topo = self.topo
        acts = Need.WEIGHTS not in cls.needs
        if getattr(cls, "pairs_units", True):
            for b, t in topo.pairs:
                mb, mt = topo.labels[b], topo.labels[t]
                differ = topo.widths_differ[(b, t)]
                if topo.units[(b, t)]:
                    if acts and cls.layerwise and topo.layers and len(differ) == len(topo.layers):
                        return (f"compares channels one to one, and every selected layer differs in width between "
                                f"{mb} and {mt} (a replaced head); select layers before the head")
                    if not cls.layerwise and acts and differ:
                        return (f"compares units one to one, and layer(s) {', '.join(differ)} differ in width between "
                                f"{mb} and {mt}; leave them out of --layers")
                    continue
                why = "are different architectures" if not topo.same(b, t) else "are compared on different layers"
                what = "channels" if acts else "weights"
                return (f"pairs {what} one to one, so it needs models of the same architecture compared on the same "
                        f"layers, and {mb} and {mt} {why}; metrics of whole representations (cka) run "
                        "across architectures")
        if (cls.layerwise or not acts) and not topo.paired:  # a WeightStep holds paired modules
            counts = " and ".join(str(c) for c in topo.counts)
            return (f"compares layer i of one model with layer i of the other, but the layer lists have {counts} "
                    "layers; pass lists of equal length (--layers / --tuned-layers) to pair them")
        return None

    def _left_out(self, req: Any, pair: Pair, layer: str | None) -> bool:
        """A layer whose width differs (a replaced head) is left out of activation metrics that pair channels."""
        return (layer is not None and Need.ACTIVATIONS in req.cls.needs and getattr(req.cls, "pairs_units", True)
                and layer in self.topo.widths_differ.get(pair, []))

    def _skip(self, req: Any, reason: str, reasons: list[str]) -> None:
        reasons.append(reason)
        self.skipped.append({"metric": req.name, "reason": reason})  # as select_metrics words its reasons
        self.notice(f"skipped {reason}")

    # -- building -----------------------------------------------------------------------------------------------
    def build(self, requests: Sequence[Any], ctx: RunContext) -> Plan:
        """Select the metrics these models can be compared with, then build and set up their feeds."""
        kept, reasons = [], []
        for req in requests:
            reason = self.cannot_run(req.cls)
            if reason is None:
                kept.append(req)
            elif req.explicit:
                raise MetricNeedsError(f"metric {req.name!r} cannot run on these models: it {reason}. Leave it out "
                                       "of --metrics")
            else:
                self._skip(req, f"metric {req.name!r} {reason}", reasons)
        if not kept:
            raise MetricNeedsError("no metric can run on these models: " + "; ".join(reasons))
        self.requests, reasons = [], []
        for req in kept:
            try:
                feeds, notes = self._feeds_of(req, ctx)
            except MetricNeedsError as exc:
                # A metric's own setup check (too few samples, a layer it cannot read ...): only a metric the user
                # named may stop the run; one reached by default or by a glob is left out with a notice.
                if req.explicit:
                    raise
                said = str(exc).removeprefix(f"{req.name}: ")  # a metric's message often starts with its name
                self._skip(req, f"metric {req.name!r}: {said}", reasons)
                continue
            self.requests.append(req)
            self.feeds.extend(feeds)
            self.notes[req.name] = notes
            for note in notes:
                self.notice(f"{req.name}: {note}")
        if not self.requests:
            raise MetricNeedsError("no metric can run on this data: " + "; ".join(reasons))
        self._share_states()
        self._compare_models()
        if self.resampling is not None:
            self._make_replicas(self.resampling)
        return self

    def _make_replicas(self, rs: Resampling) -> None:
        """One replica per group of images for every state that reads activations and can be resampled."""
        for feed in self.feeds:
            if feed.owner is None and feed.batches:
                feed.unit = feed.metric.resampling_unit()
                if feed.unit is not None:
                    feed.replicas = [feed.metric.clone() for _ in range(rs.groups)]
        for feed in self.feeds:
            if (feed.owner or feed).replicas:
                feed.spare = feed.metric.clone()
        kept = [f for f in self.feeds if f.replicas]
        if not kept:
            self.notice("intervals: no selected metric reads images, so no value gets an interval")
            return
        self.counter = GroupCounts(rs.groups, rs.seed).to(self.topo.device)
        names = sorted({f.name for f in kept})
        self.notice(f"intervals ({', '.join(names)}): each of their {len(kept)} metric states is kept for each of "
                    f"{rs.groups} groups of images, so they take {rs.groups}× the memory of one copy (the estimates "
                    "above are for one) and each batch updates every group's copy with its images; "
                    f"{rs.level:.0%} delete-one-group jackknife intervals")

    def _context(self, ctx: RunContext, feed: Feed) -> RunContext:
        """The run context of one feed: its (pair's base) model's layers and shapes, and the tuned model's."""
        topo = self.topo
        if isinstance(feed, PairFeed):
            b, t = feed.pair
            units = topo.units[(b, t)]
            tuned = dict(tuned_layers=tuple(topo.names[t].values()), tuned_shapes=topo.shapes[t])
        else:
            b = feed.models()[0]
            units = all(topo.units[p] for p in topo.pairs if b in p)
            tuned = {}
        return dataclasses.replace(
            ctx, layers=tuple(topo.names[b]), shapes={k: topo.shapes[b][n] for k, n in topo.names[b].items()},
            units_paired=units, device=topo.device, **tuned,
        )

    def _feeds_of(self, req: Any, ctx: RunContext) -> tuple[list[Feed], list[str]]:
        """One metric's feeds (per target and layer), set up, and the notes they gave."""
        cls, topo = req.cls, self.topo
        per_layer: list[str | None] = list(topo.layers) if cls.layerwise else [None]
        batches = Need.ACTIVATIONS in cls.needs
        if Need.WEIGHTS in cls.needs:
            shells: list[Feed] = [WeightFeed(req, None, None, pair=p, batches=batches) for p in topo.pairs]
        elif model_scoped(cls):
            models = sorted({i for p in topo.pairs for i in p})
            shells = [ModelFeed(req, None, None, model=m, batches=batches) for m in models]
        else:
            shells = [PairFeed(req, None, None, pair=p, batches=batches) for p in topo.pairs]
        notes: list[str] = []
        for pair in topo.pairs:
            for layer in per_layer:
                if self._left_out(req, pair, layer):
                    b, t = (topo.labels[i] for i in pair)
                    notes.append(f"layer {layer!r} left out for {b} → {t}: its width differs between the "
                                 "models (a replaced head) and this metric pairs channels one to one")
        feeds = []
        for shell in shells:
            tctx = self._context(ctx, shell)
            for layer in per_layer:
                if isinstance(shell, PairFeed) and self._left_out(req, shell.pair, layer):
                    continue
                metric = cls(**req.options).to(topo.device)
                for note in metric.setup(tctx):
                    if note not in notes:
                        notes.append(note)
                feeds.append(dataclasses.replace(shell, metric=metric, layer=layer))
        return feeds, notes

    def _share_states(self) -> None:
        owners: dict[Hashable, Feed] = {}
        for feed in self.feeds:
            key = feed.share_key()
            if key is None:
                continue
            if key in owners:
                feed.owner, feed.batches = owners[key], False
            else:
                owners[key] = feed

    def _compare_models(self) -> None:
        by_model = {(f.name, f.layer, f.model): f for f in self.feeds if isinstance(f, ModelFeed)}
        for req in self.requests:
            if not any(f.request is req for f in by_model.values()):
                continue
            for pair in self.topo.pairs:
                for layer in list(self.topo.layers) if req.cls.layerwise else [None]:
                    if not self._left_out(req, pair, layer):
                        b, t = (by_model[(req.name, layer, m)] for m in pair)
                        self.comparisons.append(Comparison(b, t))

    # -- what the engine asks -----------------------------------------------------------------------------------
    @property
    def needs_data(self) -> bool:
        return any(Need.ACTIVATIONS in f.request.cls.needs for f in self.feeds)

    @property
    def batch_feeds(self) -> list[Feed]:
        return [f for f in self.feeds if f.batches]

    def views(self) -> list[dict[str, set[str]]]:
        """Per model: layer key -> the views the feeds read there."""
        views: list[dict[str, set[str]]] = [{} for _ in self.topo.names]
        for feed in self.batch_feeds:
            wanted = feed.metric.views()
            for m in feed.models():
                for layer in [feed.layer] if feed.layer else list(self.topo.names[m]):
                    views[m].setdefault(layer, set()).update(wanted)
        return views

    def feed_weights(self, modules: Sequence[nn.Module]) -> None:
        for feed in self.feeds:
            if isinstance(feed, WeightFeed):
                feed.feed_weights(modules, self.topo)

    def feed(self, acts: Acts, index: Tensor, labels: Tensor | None) -> None:
        split: list[tuple[int, Acts, Tensor, Tensor | None]] | None = None
        for feed in self.batch_feeds:
            if not feed.replicas:
                feed.metric.update(feed.step(acts, index, labels))
            elif feed.unit == "batch":
                assert self.resampling is not None
                g = int(group_of(index[:1], self.resampling.groups, self.resampling.seed))
                feed.replicas[g].update(feed.step(acts, index, labels))
            else:
                if split is None:
                    split = self._split(acts, index, labels)
                for g, sub, sub_index, sub_labels in split:
                    feed.replicas[g].update(feed.step(sub, sub_index, sub_labels))
        if self.counter is not None:
            self.counter.update(index)

    def _split(self, acts: Acts, index: Tensor, labels: Tensor | None
               ) -> list[tuple[int, Acts, Tensor, Tensor | None]]:
        """A batch cut into its groups of images: each group's views, indices and labels, in batch order."""
        assert self.resampling is not None
        gid = group_of(index, self.resampling.groups, self.resampling.seed)
        order = torch.argsort(gid, stable=True)
        counts = torch.bincount(gid, minlength=self.resampling.groups).tolist()
        out, start = [], 0
        for g, c in enumerate(counts):
            if not c:
                continue
            sel = order[start:start + c]
            start += c
            sub = [{layer: Activation(a.layer, {k: v.index_select(0, sel) for k, v in a.views.items()})
                    for layer, a in per_model.items()} for per_model in acts]
            out.append((g, sub, index.index_select(0, sel), None if labels is None else labels.index_select(0, sel)))
        return out

    def values(self) -> list[Value]:
        """Every feed's values (a shared state copied in first), then the pairs' values of model-scoped metrics;
        with intervals, each headline scalar carries its interval."""
        for feed in self.feeds:
            if feed.replicas:  # the full state: every group's replica merged
                state = None
                for r in feed.replicas:
                    state = merge_states(feed.metric, state, r.state_dict())
                assert state is not None
                feed.metric.load_state_dict(state)
        for feed in self.feeds:
            if feed.owner is not None:
                feed.metric.load_state_dict(feed.owner.metric.state_dict())
        labels = self.topo.labels
        own = [v for f in self.feeds for v in f.values(labels)]
        values = own + [v for c in self.comparisons for v in c.values(labels)]
        return self._with_intervals(values) if self.counter is not None else values

    def _with_intervals(self, values: list[Value]) -> list[Value]:
        """The values with their leave-one-group-out replicates and jackknife intervals."""
        assert self.resampling is not None and self.counter is not None
        labels, rs = self.topo.labels, self.resampling
        sources = [f for f in self.feeds if f.replicas]
        wanted = {req.name: headline_keys(req.cls.declaration()) for req in self.requests}
        unit_of = {f.name: (f.owner or f).unit for f in self.feeds if f.spare is not None}
        used = {u: self.counter.used(u) for u in set(unit_of.values()) if u}
        reps: dict[tuple, dict[str, list[float | None]]] = {}
        for j, states in leave_one_out([[r.state_dict() for r in f.replicas] for f in sources],
                                       [f.metric for f in sources]):
            if not any(u[j] for u in used.values()):  # no image in group j: its replicate is not computed
                continue
            state_of = {id(f): st for f, st in zip(sources, states)}
            for feed in self.feeds:
                if feed.spare is not None:
                    feed.spare.load_state_dict(state_of[id(feed.owner or feed)])
            out = [v for f in self.feeds if f.spare is not None
                   for v in _values(f.name, f.layer, f.spare.compute(), f.scope(labels))]
            for c in self.comparisons:
                if c.base.spare is not None and c.tuned.spare is not None:
                    vals = c.base.spare.compare(c.base.spare, c.tuned.spare)
                    kw = dict(scope="pair", base=labels[c.base.model], tuned=labels[c.tuned.model])
                    out.extend(_values(c.base.name, c.base.layer, vals, kw))
            for v in out:
                unit = unit_of.get(v.metric)
                if unit is None or not used[unit][j]:
                    continue
                slot = reps.setdefault(_key(v), {})
                for k, x in v.scalars.items():
                    if wanted[v.metric](k):
                        slot.setdefault(k, [None] * rs.groups)[j] = float(x)
        done = []
        for v in values:
            slot = reps.get(_key(v))
            if not slot:
                done.append(v)
                continue
            ivs = {}
            for k, r in slot.items():
                if k in v.scalars:
                    ivs[k] = {**jackknife_interval(float(v.scalars[k]), r, rs.level), "replicates": r}
            done.append(dataclasses.replace(v, intervals=ivs))
        return done

    def resampling_record(self) -> dict[str, Any] | None:
        """The result's ``resampling`` record (None: no intervals)."""
        if self.resampling is None or self.counter is None:
            return None
        units = {f.name: (f.owner or f).unit for f in self.feeds if f.spare is not None}
        used = max(sum(self.counter.used(u)) for u in set(units.values()))
        return self.resampling.record(units, used)

    # -- state of the pass (checkpoint / resume / distributed merge) ---------------------------------------------
    def owners(self) -> list[Metric]:
        """The metric instances that hold state (shared-state followers excluded; with intervals, every group's
        replica and the group counts), in a fixed order."""
        out = [m for f in self.feeds if f.owner is None for m in (f.replicas or [f.metric])]
        return out + ([self.counter] if self.counter is not None else [])

    def dump_states(self) -> list[dict[str, Any]]:
        return [m.state_dict() for m in self.owners()]

    def load_states(self, states: list[dict[str, Any]]) -> None:
        owners = self.owners()
        if len(states) != len(owners):
            raise ValueError(f"checkpoint holds {len(states)} metric states, this run has {len(owners)}")
        for m, st in zip(owners, states):
            m.load_state_dict(state_to(st, self.topo.device))

    def metric_records(self) -> dict[str, dict[str, Any]]:
        out = {}
        for req in self.requests:
            inst = next((f.metric for f in self.feeds if f.request is req), None)
            out[req.name] = {
                "provider": req.provider,
                "version": req.version,
                "needs": req.cls.needs.describe(),
                "scope": req.cls.scope.value,
                "options": inst.options() if inst is not None else dict(req.options),
                "notes": self.notes.get(req.name, []),
                "declared": req.cls.declaration(),  # the report renders the metric from this, installed or not
            }
        return out
