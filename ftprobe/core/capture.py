"""Forward hooks that record named layers, in a context manager that always removes them.

Naming: a module's first call in a forward is its module path (``layer4.1.conv2``); its k-th call is
``path:k`` (``relu:2``), the torchlens convention, so a module reused inside one forward is captured per call.

Unwrapping rule for outputs that are not a tensor: a tuple, list or named tuple gives its first element that holds a
tensor; a mapping (dict, Hugging Face ``ModelOutput``) gives its first value, in insertion order, that holds a tensor;
the rule applies recursively. An output with no tensor at all is reported when layers are resolved.

Views (see :mod:`ftprobe.core.views`) are computed inside the hook, as the layer fires, so a later in-place op (an
``nn.ReLU(inplace=True)`` after a hooked ``BatchNorm``) cannot change what is recorded; the full activation is kept
only when a metric asks for the ``raw`` or ``flatten`` view, and it is cloned then if the layer was seen to be
modified in place (see :func:`ftprobe.core.layers.probe`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .views import compute_views

__all__ = ["Capture", "LayerPlan", "split_call", "unwrap_output"]


def split_call(name: str) -> tuple[str, int]:
    """``"relu:2"`` → ``("relu", 2)``; ``"layer1"`` → ``("layer1", 1)``."""
    path, sep, call = name.rpartition(":")
    if sep and call.isdigit():
        return path, int(call)
    return name, 1


def call_name(path: str, call: int) -> str:
    return path if call == 1 else f"{path}:{call}"


def unwrap_output(out: Any) -> Tensor | None:
    """The tensor a layer output stands for, by the documented rule; ``None`` if it holds none."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        items = out.values()
    elif isinstance(out, (tuple, list)):
        items = out
    else:
        return None
    for item in items:
        found = unwrap_output(item)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class LayerPlan:
    """What to record for one (possibly repeated-call) layer name."""

    views: frozenset[str]
    layout: str = "auto"
    clone: bool = False  # the activation is modified in place after the hook (seen by the probe)


class _StopForward(Exception):
    """Raised by the hook of the deepest recorded layer to cut the forward short."""


class Capture:
    """Record views of the named layers of ``model`` on every :meth:`run`.

    Args:
        model: the network.
        plans: layer name (``path`` or ``path:k``) → :class:`LayerPlan`.
        stop_after: the name whose hook ends the forward (the deepest recorded layer), or ``None`` to run it whole.
    """

    def __init__(self, model: nn.Module, plans: Mapping[str, LayerPlan], stop_after: str | None = None) -> None:
        self.model = model
        self.plans = dict(plans)
        self.stop_after = stop_after
        self.store: dict[str, dict[str, Tensor]] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []

    def _hook(self, path: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            count = self._calls.get(path, 0) + 1
            self._calls[path] = count
            name = call_name(path, count)
            plan = self.plans.get(name)
            if plan is None:
                return
            x = unwrap_output(output)
            if x is None:
                raise TypeError(f"layer {name!r} returned no tensor ({type(output).__name__})")
            x = x.detach()
            if plan.clone and plan.views & {"raw", "flatten"}:
                x = x.clone()
            self.store[name] = compute_views(x, plan.views, plan.layout)
            if name == self.stop_after:
                raise _StopForward

        return hook

    @contextmanager
    def attached(self) -> Iterator[Capture]:
        """Register the hooks; they are removed on exit, on error and on KeyboardInterrupt alike."""
        modules = dict(self.model.named_modules())
        paths = sorted({split_call(n)[0] for n in self.plans})
        try:
            for path in paths:
                self._handles.append(modules[path].register_forward_hook(self._hook(path)))
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()

    def run(self, x: Tensor) -> dict[str, dict[str, Tensor]]:
        """One forward of ``x``; returns ``{layer: {view: tensor}}`` for the planned layers that fired."""
        self.store = {}
        self._calls = {}
        try:
            self.model(x)
        except _StopForward:
            pass
        return self.store


@contextmanager
def evaluating(*models: nn.Module) -> Iterator[None]:
    """Put models in ``eval()`` and restore every submodule's previous ``training`` flag on exit."""
    saved = [[(m, m.training) for m in model.modules()] for model in models]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for flags in saved:
            for module, training in flags:
                module.training = training


def inference() -> Any:
    """The autograd context of a measuring pass."""
    return torch.inference_mode()
