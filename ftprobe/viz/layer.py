"""One layer of a model for feature visualisation: resolve it, count its channels, hook it with the graph kept.

:class:`LayerGrab` hooks one call of one module, keeps its output *with* the autograd graph (feature visualisation
differentiates through it; nothing here runs under ``inference_mode``) and stops the forward right after the layer by
raising a private exception from the hook, so the rest of the network never runs.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from ftprobe.core.capture import call_name, evaluating, split_call, unwrap_output
from ftprobe.core.errors import FtprobeError
from ftprobe.core.layers import ResolvedLayer, probe, resolve_layers
from ftprobe.core.views import channels_first
from ftprobe.data.transforms import Preset, normalize

__all__ = ["LayerGrab", "channel_count", "device_of", "layer_scores", "resolve_layer", "select_channels"]


class _StopForward(Exception):
    """Raised by the hook once the layer has fired, to skip the rest of the forward."""


def resolve_layer(model: nn.Module, layer: str, input_size: int = 224, label: str | None = None) -> ResolvedLayer:
    """Resolve one layer name, alias (``mixed4d``) or ``name:k`` with a probe forward at ``input_size``.

    Raises:
        LayerNotFound: no such layer (close names suggested).
        FtprobeError: the name is a glob matching several layers.
    """
    found = resolve_layers(model, [layer], probe(model, input_size, device_of(model)), label=label)
    if len(found) != 1:
        names = ", ".join(r.name for r in found[:6])
        raise FtprobeError(f"feature visualisation takes one layer; {layer!r} matches {len(found)} ({names}). "
                           "Name one of them.")
    return found[0]


def channel_count(resolved: ResolvedLayer) -> int:
    """Number of channels of a resolved layer (by the layout rule of :mod:`ftprobe.core.views`)."""
    return resolved.channels


def device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def select_channels(act: Tensor, layout: str, channels: Tensor) -> Tensor:
    """Spatial mean of channel ``channels[i]`` in image ``i``: ``(K,)`` from an activation ``(K, C, ...)``."""
    x = channels_first(act, layout)
    picked = x[torch.arange(x.shape[0], device=x.device), channels.to(x.device)]
    return picked if picked.dim() == 1 else picked.flatten(1).mean(dim=1)


class LayerGrab:
    """Forward hook on one call of one module: keeps its output (with the graph) and stops the forward."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.model = model
        self.path, self.call = split_call(name)
        self.calls = 0
        self.out: Tensor | None = None
        self.active = False  # only this object's own forwards are cut short (several may hook one model)

    def _hook(self, _m: nn.Module, _i: Any, output: Any) -> None:
        if not self.active:
            return
        self.calls += 1
        if self.calls == self.call:
            self.out = unwrap_output(output)
            raise _StopForward

    def attach(self, stack: ExitStack) -> LayerGrab:
        handle = self.model.get_submodule(self.path).register_forward_hook(self._hook)
        stack.callback(handle.remove)
        return self

    def __call__(self, x: Tensor) -> Tensor:
        self.calls, self.out, self.active = 0, None, True
        try:
            self.model(x)
        except _StopForward:
            pass
        finally:
            self.active = False
        if self.out is None:
            raise RuntimeError(f"layer {call_name(self.path, self.call)!r} did not fire in the forward")
        out, self.out = self.out, None
        return out


def layer_scores(model: nn.Module, layer: ResolvedLayer, images: Tensor, preprocess: str | Preset = "imagenet",
                 batch_size: int = 64) -> Tensor:
    """Spatial-mean activation of every channel of ``layer`` for RGB images: ``(N, C)`` (the top-k score).

    Args:
        images: ``(N, 3, H, W)`` RGB in ``[0, 1]``, preprocessed here with ``preprocess``.
    """
    out = []
    with ExitStack() as stack, torch.no_grad():
        stack.enter_context(evaluating(model))
        grab = LayerGrab(model, layer.name).attach(stack)
        for chunk in images.split(batch_size):
            x = channels_first(grab(normalize(chunk.to(device_of(model)), preprocess)), layer.layout)
            out.append(x if x.dim() == 2 else x.flatten(2).mean(dim=2))
    return torch.cat(out).cpu()
