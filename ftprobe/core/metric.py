"""The metric contract: declared state with a reduction per state; ``update`` / ``compute`` / ``reset`` /
``merge_state``; what a metric needs; its scope.

A plugin author writes ``__init__`` (declaring options and state), :meth:`Metric.update` and :meth:`Metric.compute`.
Everything else (reset, merging shards, distributed reduction, checkpoint and resume) works from the declared
reductions, with no metric-specific code in the engine.

Scopes
    ``Scope.PAIR`` (default): one instance per (pair of models, layer); ``update`` receives a :class:`PairStep`
    with the base and the tuned activations of the same batch. ``Scope.MODEL``: one instance per (model, layer),
    ``update`` receives a :class:`ModelStep`; per-pair values come from :meth:`Metric.compare` on two instances
    (for example the overlap of two models' top-k sets), per-model values from :meth:`Metric.compute`.

Layerwise
    ``layerwise = True`` (default): one instance per layer. ``layerwise = False``: one instance sees every selected
    layer at once (``step.layers``), for statistics that span layers such as a cross-layer CKA matrix; its
    ``compute`` returns ``{layer: {key: value}}`` (the key ``"*"`` holds values that belong to no single layer).

Weights
    A metric with ``needs == Need.WEIGHTS`` never sees data: ``update`` receives one :class:`WeightStep` per layer
    with the two modules.

Across architectures
    ``pairs_units = True`` (default): the metric matches the base's unit i with the tuned model's unit i (channel i,
    filter i, a weight tensor), which only means something for two models of the same architecture compared on the
    same layers. The engine runs it only there: on models of different architectures (or different layer lists) it
    is skipped with a notice, or refused when the user named it; on a layer whose width differs (a replaced head)
    an activation metric is left out of that layer. ``pairs_units = False``: the metric compares whole
    representations and accepts layers of different widths (CKA, CCA, Procrustes, k-NN alignment). A non-layerwise
    one then also sees layer lists of different lengths (``step.base`` and ``step.tuned`` keyed by each model's own
    names); ``RunContext.tuned_layers`` / ``tuned_shapes`` / ``units_paired`` describe the pair before the pass.
"""

from __future__ import annotations

import copy
import enum
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "Activation",
    "Metric",
    "ModelStep",
    "OptionHelp",
    "Need",
    "PairStep",
    "Reduce",
    "RunContext",
    "SAME",
    "Scope",
    "WeightStep",
    "resolve_reduce",
]

Reduce = Literal["sum", "cat", "max", "min"] | Callable[[Any, Any], Any]


class _Same:
    def __repr__(self) -> str:
        return "SAME"


SAME: Any = _Same()
"""Identity marker (also ``ftprobe.testing.SAME``): for identical models, the base's and the tuned model's
``compute()`` values of this key are equal (``Scope.MODEL`` metrics)."""


class Need(enum.Flag):
    """What a metric needs from a run."""

    ACTIVATIONS = enum.auto()
    LABELS = enum.auto()
    WEIGHTS = enum.auto()

    def describe(self) -> str:
        """Lower-case, comma-separated names, e.g. ``"activations, labels"``."""
        return ", ".join(m.name.lower() for m in Need if m in self and m.name)


class Scope(str, enum.Enum):
    """Whether a metric's state belongs to a pair of models or to one model."""

    PAIR = "pair"
    MODEL = "model"


def _tree_map2(fn: Callable[[Tensor, Tensor], Tensor], a: Any, b: Any) -> Any:
    """Apply ``fn`` leaf-wise to two states of the same structure; a dict key present on one side only is kept as
    it is (states created lazily, e.g. one entry per layer, merge with an empty default)."""
    if isinstance(a, Tensor):
        return fn(a, b)
    if isinstance(a, tuple):
        return tuple(_tree_map2(fn, x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, list):
        return [_tree_map2(fn, x, y) for x, y in zip(a, b, strict=True)]
    if isinstance(a, dict):
        return {k: _tree_map2(fn, a[k], b[k]) if k in a and k in b else (a[k] if k in a else b[k])
                for k in {**a, **b}}
    raise TypeError(f"cannot reduce a state of type {type(a).__name__}")


def _sum(a: Any, b: Any) -> Any:
    return _tree_map2(torch.add, a, b)


def _cat(a: Any, b: Any) -> Any:
    """Concatenate along the first axis; a list state is a list of chunks, and two lists are joined."""
    if isinstance(a, list):
        return [*a, *b]
    if isinstance(a, dict):
        return {k: _cat(a[k], b[k]) if k in a and k in b else (a[k] if k in a else b[k]) for k in {**a, **b}}
    if isinstance(a, tuple):
        return tuple(_cat(x, y) for x, y in zip(a, b, strict=True))
    return torch.cat([a, b])


_REDUCES: dict[str, Callable[[Any, Any], Any]] = {
    "sum": _sum,
    "cat": _cat,
    "max": lambda a, b: _tree_map2(torch.maximum, a, b),
    "min": lambda a, b: _tree_map2(torch.minimum, a, b),
}


def resolve_reduce(reduce: Reduce) -> Callable[[Any, Any], Any]:
    """The merge function ``(mine, theirs) -> merged`` of a declared reduction."""
    if callable(reduce):
        return reduce
    try:
        return _REDUCES[reduce]
    except KeyError:
        raise ValueError(f"unknown reduction {reduce!r}; use one of {sorted(_REDUCES)} or a callable") from None


def _tree_map(fn: Callable[[Tensor], Tensor], a: Any) -> Any:
    if isinstance(a, Tensor):
        return fn(a)
    if isinstance(a, tuple):
        return tuple(_tree_map(fn, x) for x in a)
    if isinstance(a, list):
        return [_tree_map(fn, x) for x in a]
    if isinstance(a, dict):
        return {k: _tree_map(fn, v) for k, v in a.items()}
    return a


# ----------------------------------------------------------------------------------------------------------------
# What update() receives


@dataclass(frozen=True)
class Activation:
    """One model's activation at one layer for one batch, as the views the metrics asked for.

    ``act.view("gap")`` (or ``act["gap"]``) is ``(N, C)``; see :mod:`ftprobe.core.views` for the vocabulary.
    """

    layer: str
    views: Mapping[str, Tensor]

    def view(self, name: str) -> Tensor:
        try:
            return self.views[name]
        except KeyError:
            raise KeyError(
                f"view {name!r} of layer {self.layer!r} was not captured; the metric must list it in views()"
            ) from None

    __getitem__ = view


@dataclass(frozen=True)
class PairStep:
    """One batch for a pair-scoped metric.

    For a layerwise metric ``base`` and ``tuned`` are :class:`Activation`; otherwise they map layer → Activation,
    both under the base's names when the layers are paired (lists of equal length), under each model's own names
    when they are not (then only for metrics with ``pairs_units = False``).
    ``index`` is ``(N,)`` int64: the global sample indices (the same samples, in the same order, for both models).
    ``labels`` is ``(N,)`` int64 class indices, or ``(N, K)`` multi-hot for multi-label data, or ``None``.
    """

    layer: str | None
    base: Any
    tuned: Any
    index: Tensor
    labels: Tensor | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,) if self.layer is not None else tuple(self.base)

    @property
    def tuned_layers(self) -> tuple[str, ...]:
        """The keys of ``tuned``: equal to :attr:`layers` when the layers are paired."""
        return (self.layer,) if self.layer is not None else tuple(self.tuned)


@dataclass(frozen=True)
class ModelStep:
    """One batch for a model-scoped metric; ``act`` is an :class:`Activation` (or layer → Activation)."""

    layer: str | None
    act: Any
    index: Tensor
    labels: Tensor | None = None


@dataclass(frozen=True)
class WeightStep:
    """The two modules of one selected layer, for a weight metric (no data involved)."""

    layer: str
    base: nn.Module
    tuned: nn.Module


@dataclass(frozen=True)
class RunContext:
    """What a metric may know before the pass (given to :meth:`Metric.setup`)."""

    layers: tuple[str, ...] = ()
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # layer -> output shape without batch
    batch_size: int | None = None
    num_samples: int | None = None  # None when the source has no length
    has_labels: bool = False
    num_classes: int | None = None
    multilabel: bool = False
    classes: tuple[str, ...] = ()
    device: str = "cpu"
    # A pair-scoped instance: the tuned model's own layer names (in order, as long as ``layers`` when paired) and
    # their shapes; empty for a model-scoped instance and in a context built by hand.
    tuned_layers: tuple[str, ...] = ()
    tuned_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    units_paired: bool = True  # base unit i is tuned unit i (same architecture, same layers, same widths)


# ----------------------------------------------------------------------------------------------------------------
# How a metric describes itself (stored in the result: a report renders it without the metric installed)


@dataclass(frozen=True)
class OptionHelp:
    """The help of one ``__init__`` option; ``flag`` makes it a ``ftprobe compare`` shorthand (``"k"`` → ``--k``):
    ``--FLAG VALUE`` sets the option on every selected metric that declares the same flag."""

    help: str
    flag: str | None = None


def _option_record(doc: str | OptionHelp) -> dict[str, Any]:
    doc = OptionHelp(doc) if isinstance(doc, str) else doc
    return {"help": doc.help, **({"flag": doc.flag} if doc.flag else {})}


# ----------------------------------------------------------------------------------------------------------------
# The base class


class Metric(ABC):
    """A streaming statistic comparing a fine-tuned model with its base.

    Subclasses set ``name`` (equal to the entry-point name), optionally ``needs``, ``scope``, ``layerwise``,
    ``pairs_units`` (see the module docstring: False lets it compare models of different architectures) and
    ``higher_is_more_similar``; declare state in ``__init__`` with :meth:`add_state`; implement :meth:`update` and
    :meth:`compute` (and :meth:`compare` for ``Scope.MODEL``). Options are the keyword arguments of ``__init__``;
    store each one as an attribute of the same name so that :meth:`options` can record it in the result.

    ``compute`` returns a mapping of names to values: Python or 0-d tensor scalars become table rows, other tensors
    and lists are kept as arrays (per-channel vectors, top-k indices) in the result.
    """

    name: ClassVar[str]
    needs: ClassVar[Need] = Need.ACTIVATIONS
    scope: ClassVar[Scope] = Scope.PAIR
    layerwise: ClassVar[bool] = True
    pairs_units: ClassVar[bool] = True  # True (safe default): runs only on models of the same architecture
    higher_is_more_similar: ClassVar[bool | None] = None
    #: What the metric gives when base and tuned are identical, which the contract kit (``ftprobe.testing``) checks
    #: for every installed metric: value key, or a glob of keys such as ``"overlap_mean@*"`` → the number expected
    #: (e.g. ``{"cka": 1.0}``), a callable ``value -> bool``, or :data:`SAME`. ``None``: not declared.
    identity: ClassVar[Mapping[str, Any] | None] = None

    # -- how the report, the summary and the CLI present the metric (see :meth:`declaration`) ---------------------
    #: Section title in the report (default: the name).
    title: ClassVar[str | None] = None
    #: A short description (default: the first line of the class docstring).
    description: ClassVar[str | None] = None
    #: Units of the values: one for all (``"%"``, ``""``, ``"relative"``) or value key (glob) → unit.
    units: ClassVar[str | Mapping[str, str]] = ""
    #: The value keys (globs such as ``"overlap_mean@*"``) that the summary sentence and the default figure show.
    headline: ClassVar[tuple[str, ...]] = ()
    #: Further value keys (globs) that get an interval in a run with intervals (:mod:`ftprobe.core.intervals`),
    #: besides the headline ones; a metric that declares neither gets one on every scalar.
    interval_keys: ClassVar[tuple[str, ...]] = ()
    #: How sentences and axes name a headline key (glob → words; ``{}`` stands for what the ``*`` matched).
    value_names: ClassVar[Mapping[str, str]] = {}
    #: The ``__init__`` options with their help (``ftprobe metrics --options``, ``-o`` and compare shorthands).
    option_help: ClassVar[Mapping[str, str | OptionHelp]] = {}
    #: The file names (globs) the :meth:`figures` hook writes into the report's ``figures/`` folder, so a re-render
    #: removes those an earlier render left; empty: the report's default names for this metric.
    figure_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}
        self._reductions: dict[str, Reduce] = {}

    # -- declaration ------------------------------------------------------------------------------------------
    def add_state(self, name: str, default: Any, reduce: Reduce = "sum") -> None:
        """Declare a state (a tensor, or a tuple/list/dict of tensors) and how two shards of it merge."""
        if not hasattr(self, "_reductions"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before add_state()")
        resolve_reduce(reduce)  # fail now on an unknown reduction name
        self._defaults[name] = _tree_map(lambda t: t.detach().clone(), default)
        self._reductions[name] = reduce
        setattr(self, name, _tree_map(lambda t: t.detach().clone(), default))

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(self._reductions)

    def reduction(self, name: str) -> Reduce:
        """How state ``name`` merges across shards (``"sum"``, ``"max"``, ``"cat"`` or a callable)."""
        return self._reductions[name]

    def views(self) -> frozenset[str]:
        """The activation views this metric reads (see :mod:`ftprobe.core.views`); the default is ``{"gap"}``."""
        return frozenset({"gap"}) if Need.ACTIVATIONS in self.needs else frozenset()

    def options(self) -> dict[str, Any]:
        """The options this instance was built with (the ``__init__`` keyword arguments), for the result file."""
        out: dict[str, Any] = {}
        for pname, param in inspect.signature(type(self).__init__).parameters.items():
            if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            out[pname] = getattr(self, pname, param.default)
        return out

    @classmethod
    def describe(cls) -> str:
        """One line for ``ftprobe metrics``: :attr:`description`, else the first line of the class docstring."""
        if cls.description:
            return cls.description
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def declaration(cls) -> dict[str, Any]:
        """What the metric says about itself, as JSON data stored in the result's ``metrics`` record: direction
        (``higher_is_more_similar``), title, description, units, headline keys and their names, the further keys that
        get intervals, options with help,
        and the figure files its hook writes."""
        return {
            "higher_is_more_similar": cls.higher_is_more_similar,
            "title": cls.title or cls.name,
            "description": cls.describe(),
            "units": cls.units if isinstance(cls.units, str) else dict(cls.units),
            "headline": list(cls.headline),
            "interval_keys": list(cls.interval_keys),
            "value_names": dict(cls.value_names),
            "option_help": {k: _option_record(v) for k, v in cls.option_help.items()},
            "figure_files": list(cls.figure_files),
        }

    @classmethod
    def figures(cls, values: Any) -> Any:
        """The report's figures of this metric (a hook; the default returns ``None``: a per-layer line plot of each
        scalar headline value, a box plot of each per-channel one).

        ``values`` is a :class:`ftprobe.report.MetricValues`: this metric's values in the result (``pairs()``,
        ``models()``, ``layers()``, ``label(layer)``), the result itself and the figure folder. Return a matplotlib
        ``Figure``, a list of them, or a list of :class:`ftprobe.report.Figure` records already written with
        ``values.save``; ``None`` or ``[]`` for the default.
        """
        return None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> list[str]:
        """Check options against the run before any data is read; raise an FtprobeError to refuse.

        Returns notes to show the user (a memory estimate, for instance). The default accepts everything.
        """
        return []

    def state_key(self) -> Hashable | None:
        """Instances whose keys are equal (and not ``None``) share one state: the engine updates one of them and
        copies its state into the others before ``compute``. Return ``None`` (the default) to never share."""
        return None

    def resampling_unit(self) -> Literal["sample", "batch"] | None:
        """How a run with intervals (:mod:`ftprobe.core.intervals`) splits this metric's data into groups of images.

        ``"sample"`` (the default for a metric that reads activations): each image goes to its group, so an
        ``update`` may receive a step with a few images of one group. ``"batch"``: whole batches go to a group (a
        statistic defined per batch, such as minibatch CKA). ``None``: no interval (the default for a metric that
        reads weights). A metric's reductions must not modify their arguments: replicas are merged many times.
        """
        return "sample" if Need.ACTIVATIONS in self.needs and Need.WEIGHTS not in self.needs else None

    @abstractmethod
    def update(self, step: Any) -> None:
        """Fold one batch (a :class:`PairStep`, :class:`ModelStep` or :class:`WeightStep`) into the state."""

    @abstractmethod
    def compute(self) -> Mapping[str, Any]:
        """The metric's values from the accumulated state."""

    def compare(self, base: Metric, tuned: Metric) -> Mapping[str, Any]:
        """Per-pair values from two model-scoped instances (``Scope.MODEL`` only)."""
        raise NotImplementedError(f"{type(self).__name__} is model-scoped but does not implement compare()")

    def reset(self) -> None:
        """Restore every state to its declared default."""
        for name, default in self._defaults.items():
            setattr(self, name, _tree_map(lambda t: t.clone(), default))

    def merge_state(self, other: Metric | Mapping[str, Any]) -> None:
        """Fold another shard's state into this one with each state's declared reduction."""
        theirs = other.state_dict() if isinstance(other, Metric) else other
        missing = set(self._reductions) - set(theirs)
        if missing:
            raise ValueError(f"cannot merge: the other state lacks {sorted(missing)}")
        for name, reduce in self._reductions.items():
            setattr(self, name, resolve_reduce(reduce)(getattr(self, name), theirs[name]))

    def state_dict(self) -> dict[str, Any]:
        """The declared states (tensors or containers of tensors), safe for ``torch.save(weights_only=True)``."""
        return {name: getattr(self, name) for name in self._reductions}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the declared states by ``state`` (as returned by :meth:`state_dict`)."""
        missing = set(self._reductions) - set(state)
        if missing:
            raise ValueError(f"state of {type(self).__name__} lacks {sorted(missing)}")
        for name in self._reductions:
            setattr(self, name, state[name])

    def to(self, device: torch.device | str) -> Metric:
        """Move every state tensor to ``device`` (in place) and return self."""
        for name in self._reductions:
            setattr(self, name, _tree_map(lambda t: t.to(device), getattr(self, name)))
        self._defaults = {k: _tree_map(lambda t: t.to(device), v) for k, v in self._defaults.items()}
        return self

    def clone(self) -> Metric:
        """A deep copy (same options, same state)."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def state_to(state: Any, device: torch.device | str) -> Any:
    """A state (a tensor or containers of tensors) with every tensor moved to ``device``."""
    return _tree_map(lambda t: t.to(device), state)


def iter_state_tensors(state: Mapping[str, Any]) -> Iterator[Tensor]:
    """Every tensor in a state dict, depth first (for distributed reductions and memory estimates)."""
    stack: list[Any] = list(state.values())[::-1]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, dict):
            stack.extend(list(item.values())[::-1])
        elif isinstance(item, Sequence) and not isinstance(item, str):
            stack.extend(list(item)[::-1])
