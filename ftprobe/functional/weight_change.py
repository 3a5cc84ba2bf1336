"""Parameter-space change between a base and a fine-tuned kernel (Gonthier et al. 2020, §3.2).

All functions take the two weight tensors of one layer, ``(C_out, C_in/groups, *kernel)`` for a convolution or
``(out, in)`` for a linear layer, and compute in float64. Biases are not part of the study's measure.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "filter_relative_change",
    "weight_change_stats", "kernel_cosine", "most_changed_filters", "relative_l2_change", "weight_l2_change"]


def _check(w_base: Tensor, w_tuned: Tensor) -> tuple[Tensor, Tensor]:
    if w_base.shape != w_tuned.shape:
        raise ValueError(f"weight shapes differ: {tuple(w_base.shape)} vs {tuple(w_tuned.shape)}")
    return w_base.detach().double(), w_tuned.detach().double()


def weight_change_stats(w_base: Tensor, w_tuned: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every measure of one kernel pair from a single float64 conversion (what the metric class uses).

    Returns:
        ``(l2, base_norm, cosine, r)``: ``‖ΔW‖_F``, ``‖W_base‖_F``, the kernel cosine and the per-filter ``r_c``.
    """
    b, t = _check(w_base, w_tuned)
    d = t - b
    base_norm = torch.linalg.vector_norm(b)
    cosine = torch.dot(b.flatten(), t.flatten()) / (base_norm * torch.linalg.vector_norm(t))
    r = d.abs().flatten(1).mean(dim=1) / b.abs().flatten(1).mean(dim=1)
    return torch.linalg.vector_norm(d), base_norm, cosine, r


def weight_l2_change(w_base: Tensor, w_tuned: Tensor) -> Tensor:
    """The study's raw measure: the Frobenius norm of the kernel difference, ``‖W_tuned − W_base‖_F``.

    Example:
        >>> w = torch.zeros(2, 1, 1, 1)
        >>> weight_l2_change(w, w + torch.tensor([3.0, 4.0]).view(2, 1, 1, 1)).item()
        5.0
    """
    b, t = _check(w_base, w_tuned)
    return torch.linalg.vector_norm(t - b)


def relative_l2_change(w_base: Tensor, w_tuned: Tensor) -> Tensor:
    """``‖W_tuned − W_base‖_F / ‖W_base‖_F`` (``inf`` or ``nan`` when the base kernel is all zeros, never hidden)."""
    b, t = _check(w_base, w_tuned)
    return torch.linalg.vector_norm(t - b) / torch.linalg.vector_norm(b)


def filter_relative_change(w_base: Tensor, w_tuned: Tensor) -> Tensor:
    """Per-filter relative change ``r_c = mean|ΔW_c| / mean|W_base,c|`` (means over kh, kw, c_in): ``(C_out,)``.

    Example:
        >>> b = torch.ones(2, 3, 1, 1)
        >>> t = b.clone(); t[1] += 0.5
        >>> filter_relative_change(b, t).tolist()
        [0.0, 0.5]
    """
    b, t = _check(w_base, w_tuned)
    delta = (t - b).abs().flatten(1).mean(dim=1)
    return delta / b.abs().flatten(1).mean(dim=1)


def kernel_cosine(w_base: Tensor, w_tuned: Tensor) -> Tensor:
    """Cosine similarity of the two kernels seen as vectors (1 = same direction)."""
    b, t = _check(w_base, w_tuned)
    b, t = b.flatten(), t.flatten()
    return torch.dot(b, t) / (torch.linalg.vector_norm(b) * torch.linalg.vector_norm(t))


def most_changed_filters(r: Tensor, n: int = 3) -> Tensor:
    """Indices of the ``n`` largest ``r_c`` (ties: the smaller index first); NaN entries are never picked first."""
    r = torch.nan_to_num(r.double(), nan=-torch.inf)
    order = torch.argsort(-r, stable=True)
    return order[: min(n, r.numel())]
