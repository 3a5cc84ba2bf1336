"""Discover and resolve layer names: module paths, shell globs, per-architecture aliases, repeated calls.

Glob rule: ``*`` and ``?`` match within one path component (``inception4*`` matches ``inception4a`` … ``inception4e``
but not ``inception4a.branch1``); ``**`` matches across components. A pattern matches repeated calls (``relu:2``)
only when it contains ``:`` itself (``relu:*``).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ._hf import config_input, natural_blocks
from .aliases import ALIASES, LAYOUTS, NATURAL_LAYERS, arch_key
from .capture import call_name, split_call, unwrap_output
from .errors import FtprobeError, LayerNotFound

__all__ = [
    "LayerInfo", "ResolvedLayer", "default_input_size", "list_layers", "module_layout", "natural_layers", "probe",
    "resolve_layers",
]


@dataclass(frozen=True)
class LayerInfo:
    """One call of one module during a probe forward, in execution order."""

    name: str  # "path" or "path:k"
    type: str  # module class name
    shape: tuple[int, ...] | None  # output shape without the batch axis; None when the output holds no tensor
    calls: int = 1  # how many times the module ran in the forward
    inplace: bool = False  # the output was modified in place after the module returned
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedLayer:
    """A layer the user asked for: what they typed and the canonical name it resolved to."""

    spec: str
    name: str
    via_alias: bool = False
    layout: str = "auto"
    shape: tuple[int, ...] | None = None
    inplace: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def channels_first_shape(self) -> tuple[int, ...]:
        """The output shape (no batch axis) with the channel axis first, as the views see it."""
        shape = tuple(self.shape or ())
        if self.layout == "nhwc" and len(shape) >= 2:
            return (shape[-1], *shape[:-1])
        return shape

    @property
    def channels(self) -> int:
        """The number of channels (by the layout rule of :mod:`ftprobe.core.views`)."""
        shape = self.shape or ()
        if len(shape) == 1 or self.layout == "nhwc" or (self.layout == "auto" and len(shape) == 2):
            return int(shape[-1])
        return int(shape[0])


def default_input_size(model: nn.Module) -> int:
    """The image size a probe forward uses: a Hugging Face config's ``image_size``, timm's configured size, else 224."""
    hf = config_input(model)
    if hf is not None:
        return hf[1]
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return int(size[-1]) if size else 224


def probe(model: nn.Module, input_size: int | None = None, device: torch.device | str = "cpu") -> list[LayerInfo]:
    """Run one forward on a zero batch and list every module call in execution order, with output shapes.

    The model is put in ``eval()`` for the probe and its training flags are restored afterwards.
    """
    from .capture import evaluating

    size = input_size or default_input_size(model)
    channels = (config_input(model) or (3, size))[0]  # a Hugging Face config's num_channels, else RGB
    aliases_of: dict[str, list[str]] = {}
    for alias, canonical in ALIASES.get(arch_key(model), {}).items():
        aliases_of.setdefault(canonical, []).append(alias)
    records: list[tuple[str, str, object, int]] = []
    calls: dict[str, int] = {}

    def make_hook(path: str):
        def hook(module: nn.Module, _inp: object, out: object) -> None:
            calls[path] = calls.get(path, 0) + 1
            x = unwrap_output(out)
            records.append((call_name(path, calls[path]), type(module).__name__, x, x._version if x is not None else 0))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        with evaluating(model), torch.no_grad():
            model(torch.zeros(1, channels, size, size, device=device))
    except Exception as exc:
        raise FtprobeError(
            f"a probe forward of {type(model).__name__} on a zero batch of 1×{channels}×{size}×{size} failed: "
            f"{type(exc).__name__}: {exc}. If the model needs another input size, pass --input-size."
        ) from exc
    finally:
        for h in handles:
            h.remove()
    infos = []
    for name, typ, x, version in records:
        path = split_call(name)[0]
        shape = tuple(x.shape[1:]) if x is not None else None
        inplace = x is not None and x._version != version
        infos.append(LayerInfo(name, typ, shape, calls[path], inplace, tuple(aliases_of.get(name, ()))))
    return infos


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^.:]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^.:]")
            i += 1
        elif pattern[i] == "[":
            j = pattern.find("]", i)
            if j < 0:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i : j + 1])[4:-3])
                i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


# Modules whose output is channels-first by PyTorch's own contract, whatever their position in a model.
_CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)


def module_layout(
    model: nn.Module, name: str, module: nn.Module | None = None, shape: Sequence[int] | None = None
) -> str:
    """The layout rule of one layer: ``"nhwc"`` (channels last, moved first by the views) or ``"auto"``.

    In order: a convolution, batch/instance/group norm or pooling module is channels-first (``"auto"``); an
    ``nn.Linear`` or a plain ``nn.LayerNorm`` over the last axis whose output has spatial axes (``shape``, without
    the batch axis, of 3 or more dims) is channels-last (its units are the last axis); otherwise the first pattern of
    ``LAYOUTS[arch_key(model)]`` that matches the module path decides; else ``"auto"``.

    Args:
        model: the network (its class selects the table).
        name: the layer name (``path`` or ``path:k``).
        module: the module at that path (looked up when omitted).
        shape: the layer's output shape without the batch axis, when known.
    """
    path = split_call(name)[0]
    if module is None:
        module = dict(model.named_modules()).get(path)
    if isinstance(module, _CHANNELS_FIRST):
        return "auto"
    last_axis = isinstance(module, nn.Linear) or (type(module) is nn.LayerNorm and len(module.normalized_shape) == 1)
    if last_axis and shape is not None and len(shape) >= 3:
        return "nhwc"
    for pattern, layout in LAYOUTS.get(arch_key(model), {}).items():
        if _glob_regex(pattern).match(path):
            return layout
    return "auto"


def resolve_layers(
    model: nn.Module, specs: Sequence[str], infos: Sequence[LayerInfo], *, label: str | None = None
) -> list[ResolvedLayer]:
    """Map what the user typed to canonical layer names of ``model`` (in the order typed, globs in execution order).

    Raises:
        LayerNotFound: a name matches nothing (with close names suggested).
        FtprobeError: a module exists but never runs in the forward, or its output holds no tensor.
    """
    by_name = {i.name: i for i in infos}
    aliases = ALIASES.get(arch_key(model), {})
    modules = dict(model.named_modules())
    module_names = {n for n in modules if n}
    chosen: dict[str, ResolvedLayer] = {}

    def add(spec: str, name: str, via_alias: bool) -> None:
        info = by_name[name]
        if info.shape is None:
            raise FtprobeError(
                f"layer {name!r} ({info.type}) returns no tensor, so there is nothing to measure; "
                "pick one of its submodules (see `ftprobe layers MODEL`)"
            )
        if name not in chosen:
            layout = module_layout(model, name, modules.get(split_call(name)[0]), info.shape)
            chosen[name] = ResolvedLayer(spec, name, via_alias, layout, info.shape, info.inplace)

    for spec in specs:
        path, call = split_call(spec)
        if spec in by_name:
            add(spec, spec, False)
        elif path in aliases and path not in module_names and call_name(aliases[path], call) in by_name:
            add(spec, call_name(aliases[path], call), True)
        elif _is_glob(spec):
            rx = _glob_regex(spec)
            hits = [i.name for i in infos if (":" in i.name) == (":" in spec) and rx.match(i.name)]
            alias_hits = [canon for alias, canon in aliases.items() if rx.match(alias) and canon in by_name]
            if not hits and not alias_hits:
                raise LayerNotFound(spec, _suggest(spec, by_name, aliases), label)
            for name in hits:
                add(spec, name, False)
            for name in sorted(alias_hits, key=lambda n: list(by_name).index(n)):
                add(spec, name, True)
        elif path in module_names:
            raise FtprobeError(
                f"layer {spec!r} exists in {label or type(model).__name__} but does not run in its forward pass "
                f"(in eval mode{', or not ' + str(call) + ' times' if call > 1 else ''}), so it has no activation"
            )
        else:
            raise LayerNotFound(spec, _suggest(spec, by_name, aliases), label)
    return list(chosen.values())


def _suggest(spec: str, by_name: dict[str, LayerInfo], aliases: dict[str, str]) -> list[str]:
    candidates = list(by_name) + list(aliases)
    return difflib.get_close_matches(spec, candidates, n=3, cutoff=0.6)


def natural_layers(model: nn.Module, infos: Sequence[LayerInfo]) -> list[str]:
    """The layers used when the user names none: the architecture's table, a Hugging Face model's encoder blocks,
    timm's feature_info, or the top-level stages (top-level children with parameters, except a final classification
    head, see :func:`_is_head`)."""
    fired = {i.name for i in infos}
    table = NATURAL_LAYERS.get(arch_key(model))
    if table:
        return [n for n in table if n in fired]
    blocks = natural_blocks(model, fired)
    if blocks:
        return blocks
    feature_info = getattr(model, "feature_info", None)
    if isinstance(feature_info, list) and feature_info and isinstance(feature_info[0], dict):
        names = [f.get("module") for f in feature_info]
        names = [n for n in names if n in fired]
        if names:
            return names
    children = [(n, m) for n, m in model.named_children() if n in fired and any(True for _ in m.parameters())]
    shapes = {i.name: i.shape for i in infos}
    if len(children) > 1 and _is_head(*children[-1], shapes.get(children[-1][0])):
        children = children[:-1]
    return [n for n, _ in children]


_HEAD_NAMES = ("classifier", "fc", "head", "heads", "last_linear")


def _is_head(name: str, module: nn.Module, shape: tuple[int, ...] | None) -> bool:
    """Whether the last top-level stage is the classification head, left out of the natural layers since a fine-tuned
    model often replaces it: a stage whose output is one vector per image and that holds a linear layer (``fc``,
    ``classifier``, ``heads``) or bears a head's name (SqueezeNet's convolutional ``classifier``). A last stage with
    spatial or token axes (a feature extractor whose head was removed) stays."""
    if shape is None or sum(d > 1 for d in shape) > 1:
        return False
    return name in _HEAD_NAMES or any(isinstance(m, nn.Linear) for m in module.modules())


def list_layers(
    model: nn.Module, pattern: str | None = None, *, input_size: int | None = None, device: str = "cpu"
) -> list[LayerInfo]:
    """The hookable layers of ``model`` in execution order (one probe forward), optionally filtered by a glob.

    The discovery twin of ``layers=`` / ``--layers``: every name listed here (and every alias) can be asked for.
    """
    infos = probe(model, input_size, device)
    if not pattern:
        return infos
    rx = _glob_regex(pattern)
    return [i for i in infos if rx.match(i.name) or any(rx.match(a) for a in i.aliases)]
