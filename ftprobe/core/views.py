"""Derived views of a captured activation, computed once per (model, layer, batch) and shared by all metrics.

A *view* is named by a string; metrics say which views they need (:meth:`ftprobe.Metric.views`), the capture hook
computes exactly those, right when the layer fires (before any later in-place op can touch the tensor), and keeps
only the views, not the activation, unless a metric asked for ``"raw"``.

Layout rule (documented in the README): a 4-D output is ``(N, C, H, W)`` (channels first, as torch convolutions
produce); a 3-D output is ``(N, T, D)`` tokens (as transformers produce), its channels are ``D``; a 2-D output is
``(N, D)``; 5-D and more are ``(N, C, ...)``. A layer whose output is channels-last (torchvision and timm Swin stages,
an ``nn.Linear`` applied to ``(N, H, W, C)``; see :func:`ftprobe.core.layers.module_layout`) has the layout
``"nhwc"``, which moves the last axis to position 1 first.

========  ===============================================================
view      meaning
========  ===============================================================
raw       the activation as the module returned it (after unwrapping)
gap       mean over every non-channel axis: ``(N, C)`` (the study's "spatially averaged" features and channel score)
max       max over every non-channel axis: ``(N, C)`` (the ``--score max`` option)
flatten   ``(N, C·H·W)``: every unit is a feature
========  ===============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import Tensor

__all__ = ["VIEWS", "channels_first", "compute_views", "num_channels"]


def channels_first(x: Tensor, layout: str = "auto") -> Tensor:
    """Return ``x`` with the batch axis first and the channel axis second (a 2-D ``(N, D)`` stays as it is)."""
    if x.dim() < 2:
        raise ValueError(f"an activation needs a batch axis and a feature axis, got shape {tuple(x.shape)}")
    if layout == "nhwc" and x.dim() >= 3:
        return x.movedim(-1, 1)
    if layout == "auto" and x.dim() == 3:  # (N, T, D) tokens: D is the channel axis
        return x.transpose(1, 2)
    return x


def num_channels(shape: Sequence[int], layout: str = "auto") -> int:
    """The channel count the views give a layer whose output shape, without the batch axis, is ``shape``.

    Example:
        >>> num_channels((56, 56, 96), "nhwc"), num_channels((96, 56, 56)), num_channels((197, 768))
        (96, 96, 768)
    """
    if len(shape) == 0:
        return 1
    if len(shape) == 1:
        return int(shape[0])
    if layout == "nhwc" or len(shape) == 2:  # channels last, or (T, D) tokens
        return int(shape[-1])
    return int(shape[0])


def _reduce_mean(x: Tensor) -> Tensor:
    return x if x.dim() == 2 else x.flatten(2).mean(dim=2)


def _reduce_max(x: Tensor) -> Tensor:
    return x if x.dim() == 2 else x.flatten(2).amax(dim=2)


VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "raw": lambda x: x,
    "gap": _reduce_mean,
    "max": _reduce_max,
    "flatten": lambda x: x.flatten(1),
}


def compute_views(x: Tensor, names: Iterable[str], layout: str = "auto") -> dict[str, Tensor]:
    """Compute the named views of one activation. ``raw`` is returned as captured; the others channels-first."""
    out: dict[str, Tensor] = {}
    cf = None
    for name in names:
        if name not in VIEWS:
            raise KeyError(f"unknown view {name!r}; known views: {', '.join(sorted(VIEWS))}")
        if name == "raw":
            out[name] = x
            continue
        if cf is None:
            cf = channels_first(x, layout)
        out[name] = VIEWS[name](cf)
    return out
