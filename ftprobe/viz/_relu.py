"""Lucid's redirected ReLU gradient (``render_vis(relu_gradient_override=True)``, its default).

A channel that no pixel of the start image activates has a zero gradient through its ReLU, so plain activation
maximisation never starts. Lucid overrides the ReLU gradient during feature visualisation: for an image whose ReLU
gradient is zero everywhere, the incoming gradient passes through anyway, except where it would push an already
negative input lower; an image with any non-zero ReLU gradient gets the ordinary one. The forward is unchanged.

Here the override is a ``TorchFunctionMode`` active only around the visualisation forward: it replaces
``torch.relu``, ``torch.relu_``, ``Tensor.relu(_)`` and ``torch.nn.functional.relu`` (so ``nn.ReLU`` too) by the
redirected function. In-place calls (``F.relu(x, inplace=True)``) return a new tensor instead of writing into ``x``;
every torchvision and timm block uses the returned value, so the forward computes the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["RedirectedReLU", "redirected_relu"]


class _RedirectedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        negative = x < 0
        relu_grad = grad.masked_fill(negative, 0)
        alive = torch.count_nonzero(relu_grad, dim=tuple(range(1, x.dim()))) > 0 if x.dim() > 1 else relu_grad.ne(0)
        if bool(alive.all()):  # the usual case once the image drives the channel: the ordinary gradient
            return relu_grad
        # grad > 0 means a descent step lowers the output; never push a negative input further down.
        redirected = grad.masked_fill(negative & (grad > 0), 0)
        return torch.where(alive.view(-1, *([1] * (x.dim() - 1))) if x.dim() > 1 else alive, relu_grad, redirected)


def redirected_relu(x: Tensor) -> Tensor:
    """ReLU whose gradient is redirected for images where it would be zero everywhere (see the module doc)."""
    return _RedirectedReLUFn.apply(x)


_RELUS = {torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu, torch.nn.functional.relu_}


class RedirectedReLU(TorchFunctionMode):
    """Context manager: inside it, every ReLU call of a forward uses :func:`redirected_relu`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _RELUS and args and isinstance(args[0], Tensor) and args[0].requires_grad:
            return redirected_relu(args[0])
        return func(*args, **(kwargs or {}))
