"""Which channels to render: the most-changed filters (weight space) or the overlap extremes (a results file).

**Most changed** (``--pick most-changed``): the study's per-filter relative change
``r_c = mean|ΔW_c| / mean|W_base,c|`` (:func:`ftprobe.functional.weight_change.filter_relative_change`), measured on
the convolutions whose filters *are* the layer's output channels:

1. the layer's last ``Conv*d`` in module order (``named_modules``), when its filter count equals the layer's channel
   count (a single conv block: ``conv -> bn -> relu``, a ResNet stage, TinyNet's blocks); channel ``c`` is filter
   ``c``;
2. otherwise, a concatenating block (GoogLeNet's inception modules): each direct child of the layer, in module
   order, is a branch, and its last convolution gives the next channels of the concatenation; the rule applies
   when the branches' filter counts add up to the layer's channel count (``inception4d``: ``branch1.conv`` 112,
   ``branch2.1.conv`` 288, ``branch3.1.conv`` 64, ``branch4.1.conv`` 64 = 528). This assumes the forward
   concatenates the branches in the order they are registered, which torchvision's and timm's inception blocks do;
3. anything else (a branch without a convolution, a layer whose convolutions live elsewhere) is an error that says
   to name the channels with ``--channels``.

**Overlap extremes** (``--pick overlap-extremes``): from a ``results.json`` of ``ftprobe compare``, the
``topk_overlap`` pair values ``overlap@K`` of the layer; the channels with the lowest, the median
(``sorted[(n - 1) // 2]``) and the highest overlap (ties: the smaller channel index), as the study did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ftprobe.core.errors import FtprobeError, ModelMismatch
from ftprobe.functional.weight_change import filter_relative_change, most_changed_filters

__all__ = ["Pick", "filter_change", "pick_most_changed", "pick_overlap_extremes"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Pick:
    """Chosen channels with the value that chose them.

    Attributes:
        channels: channel indices, in display order.
        values: the value of each channel (``r_c`` or the overlap in percent).
        measure: caption name of the value (``"r"`` or ``"overlap@100"``).
        roles: why each channel was chosen (``"most changed #1"``, ``"lowest"``, ``"median"``, ``"highest"``).
        source: where the values come from (the convolutions, or the results file and pair).
    """

    channels: tuple[int, ...]
    values: tuple[float, ...]
    measure: str
    roles: tuple[str, ...]
    source: str

    def caption(self, i: int) -> str:
        """``"r=0.123"`` / ``"overlap@100=12.0"`` for the ``i``-th channel."""
        v = self.values[i]
        return f"{self.measure}={v:.3g}" if self.measure == "r" else f"{self.measure}={v:.1f}"


def _convs(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, _CONV)]


def _filter_map(layer: nn.Module, channels: int, name: str) -> list[str]:
    """Submodule names of the convolutions whose filters, concatenated in order, are the layer's channels."""
    convs = _convs(layer)
    if not convs:
        raise FtprobeError(f"layer {name!r} contains no convolution, so it has no filters to rank by weight change; "
                           "name the channels with --channels (channels=[...]).")
    last_name, last = convs[-1]
    if last.out_channels == channels:
        return [last_name]
    branches = []
    for child_name, child in layer.named_children():
        inner = _convs(child)
        if not inner:
            branches = []
            break
        branches.append((f"{child_name}.{inner[-1][0]}" if inner[-1][0] else child_name, inner[-1][1].out_channels))
    if branches and sum(n for _, n in branches) == channels:
        return [b for b, _ in branches]
    found = " + ".join(str(n) for _, n in branches) or "no branch map"
    raise FtprobeError(
        f"cannot map the filters of layer {name!r} to its {channels} channels: its last convolution {last_name!r} "
        f"has {last.out_channels} filters and its branches' last convolutions give {found}. Name the channels with "
        "--channels (channels=[...])."
    )


def filter_change(base: nn.Module, tuned: nn.Module, layer: str, channels: int) -> tuple[Tensor, list[str]]:
    """Per-channel ``r_c`` of a layer between two models: ``(C,)`` float64, and the convolutions it came from.

    Args:
        base, tuned: the two models (same architecture).
        layer: the layer's module path (canonical name, without ``:k``).
        channels: the layer's channel count ``C``.

    Raises:
        FtprobeError: the filters cannot be mapped to the channels (see the module doc).
        ModelMismatch: the two models' kernels differ in shape.
    """
    path = layer.rpartition(":")[0] if layer.rpartition(":")[2].isdigit() else layer
    mb, mt = base.get_submodule(path), tuned.get_submodule(path)
    names = _filter_map(mb, channels, layer)
    parts = []
    for sub in names:
        wb = mb.get_submodule(sub).weight if sub else mb.weight
        try:
            wt = mt.get_submodule(sub).weight if sub else mt.weight
        except AttributeError as exc:
            raise ModelMismatch(f"the tuned model has no convolution {path}.{sub}: the architectures differ") from exc
        if wb.shape != wt.shape:
            raise ModelMismatch(f"{path}.{sub}: kernel shapes differ ({tuple(wb.shape)} vs {tuple(wt.shape)}); "
                                "--pick most-changed needs two versions of one architecture")
        parts.append(filter_relative_change(wb, wt).cpu())
    return torch.cat(parts), [f"{path}.{s}" if s else path for s in names]


def pick_most_changed(base: nn.Module, tuned: nn.Module, layer: str, channels: int, n: int = 3) -> Pick:
    """The ``n`` channels whose filters changed most (largest ``r_c``; the study used 3).

    Example:
        >>> from ftprobe.testing import TinyNet, perturbed_copy
        >>> net = TinyNet()
        >>> pick_most_changed(net, perturbed_copy(net), "mixed3a", 16).roles
        ('most changed #1', 'most changed #2', 'most changed #3')
    """
    r, convs = filter_change(base, tuned, layer, channels)
    top = most_changed_filters(r, n).tolist()
    return Pick(tuple(top), tuple(float(r[c]) for c in top), "r",
                tuple(f"most changed #{i + 1}" for i in range(len(top))), "r_c of " + " + ".join(convs))


def _load_result(results: Any) -> Any:
    from ftprobe.core.results import Result

    if isinstance(results, Result):
        return results
    if not os.path.exists(results):
        raise FtprobeError(f"results file not found: {results}. Write one with `ftprobe compare ... --out DIR`.")
    try:
        return Result.load(results)
    except (ValueError, KeyError, TypeError) as exc:
        raise FtprobeError(f"{results} is not a results.json written by ftprobe compare ({exc}).") from exc


def pick_overlap_extremes(results: Any, layer_names: Sequence[str], *, k: int | str | None = None,
                          pair: tuple[str, str] | None = None) -> Pick:
    """The lowest-, median- and highest-overlap channels of a layer, from a ``ftprobe compare`` result.

    Args:
        results: a :class:`ftprobe.Result` or the path of a ``results.json``.
        layer_names: names the layer may have in the file (canonical name, alias typed by the user).
        k: which ``overlap@K`` (default: the first one the file holds).
        pair: ``(base_label, tuned_label)`` to choose among several pairs; when it matches no pair and the file
            holds exactly one for the layer, that one is used.

    Raises:
        FtprobeError: no top-k overlap for that layer, unknown k, several pairs and none chosen.
    """
    res = _load_result(results)
    names = set(layer_names)
    names |= {d.get("name") for d in res.layers if d.get("spec") in names or d.get("name") in names}
    found = [v for v in res.select("topk_overlap") if v.scope == "pair" and v.layer in names
             and any(key.startswith("overlap@") for key in v.arrays)]
    if not found:
        have = sorted({v.layer for v in res.select("topk_overlap") if v.scope == "pair"})
        raise FtprobeError(f"the results hold no topk_overlap values for layer {sorted(names - {None})[0]!r} "
                           f"(layers with overlaps: {', '.join(have) or 'none'}). Run `ftprobe compare ... --layers "
                           f"{layer_names[0]} --data DIR` with the topk_overlap metric first.")
    chosen = [v for v in found if pair is not None and (v.base, v.tuned) == tuple(pair)]
    if not chosen:
        if len(found) > 1:
            pairs = "; ".join(f"{v.base} → {v.tuned}" for v in found)
            raise FtprobeError(f"the results hold several pairs for this layer ({pairs}); pass the two models of "
                               "one pair, base first.")
        chosen = found
    value = chosen[0]
    keys = [key for key in value.arrays if key.startswith("overlap@")]
    key = keys[0] if k is None else f"overlap@{k}"
    if key not in value.arrays:
        raise FtprobeError(f"no {key} in the results for {value.layer}; available: {', '.join(keys)}.")
    ov = torch.tensor([float("nan") if x is None else float(x) for x in value.arrays[key]], dtype=torch.float64)
    valid = torch.nonzero(~torch.isnan(ov)).flatten()
    if valid.numel() == 0:
        raise FtprobeError(f"{key} of layer {value.layer} holds no finite value.")
    order = valid[torch.argsort(ov[valid], stable=True)].tolist()
    highest = int(valid[torch.argsort(-ov[valid], stable=True)[0]])
    picks: list[tuple[int, str]] = []
    for idx, role in ((order[0], "lowest"), (order[(len(order) - 1) // 2], "median"), (highest, "highest")):
        if idx not in [c for c, _ in picks]:
            picks.append((idx, role))
    return Pick(tuple(c for c, _ in picks), tuple(float(ov[c]) for c, _ in picks), key,
                tuple(r for _, r in picks), f"{key} of {value.base} → {value.tuned} at {value.layer}")
