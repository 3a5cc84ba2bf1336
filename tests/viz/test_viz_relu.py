"""Lucid's redirected ReLU gradient: the rule, per image, and that it starts a dead channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ftprobe.viz import visualize_channels
from ftprobe.viz._relu import RedirectedReLU, redirected_relu


def _lucid_rule(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Lucid's redirected_relu_grad written out per image, with loops, as the oracle."""
    out = torch.empty_like(grad)
    for i in range(x.shape[0]):
        relu_grad = torch.where(x[i] < 0, 0.0, grad[i])
        redirected = torch.where((x[i] < 0) & (grad[i] > 0), 0.0, grad[i])
        out[i] = relu_grad if relu_grad.norm() > 0 else redirected
    return out


def test_gradient_matches_lucids_rule():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    x[1] = -x[1].abs() - 0.1  # image 1: every input negative, so its ordinary ReLU gradient is zero
    grad = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    y = redirected_relu(xr)
    assert torch.equal(y, F.relu(x))
    y.backward(grad)
    torch.testing.assert_close(xr.grad, _lucid_rule(x, grad))
    assert xr.grad[1].abs().sum() > 0 and torch.equal(xr.grad[0], torch.where(x[0] < 0, 0.0, grad[0]))


def test_mode_replaces_every_relu_spelling_only_while_active():
    x = torch.full((1, 4), -1.0, requires_grad=True)
    mods = [nn.ReLU(), nn.ReLU(inplace=True)]
    fns = [torch.relu, F.relu, lambda t: F.relu(t, inplace=True), lambda t: t.relu(), mods[0], mods[1]]
    for fn in fns:
        xx = x.clone()
        with RedirectedReLU():
            out = fn(xx * 1.0)
        (-out.sum()).backward()
        assert x.grad is not None and bool((x.grad < 0).all()), fn
        x.grad = None
    xx = x * 1.0
    (-torch.relu(xx).sum()).backward()
    assert bool((x.grad == 0).all())  # outside the mode: the ordinary gradient


def test_dead_start_channel_gets_going_only_with_the_redirect():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(net[0].weight.abs() + 0.2)
        # dead for the grey start image (and anything darker), alive for bright images
        net[0].bias.copy_(-0.75 * net[0].weight.sum(dim=(1, 2, 3)))
    kw = dict(steps=60, size=12, transforms=[], preprocess="none")
    plain = visualize_channels(net, "1", [0], relu_redirect=False, **kw)
    redirected = visualize_channels(net, "1", [0], **kw)
    assert float(plain.activation[0]) == 0.0 and float(redirected.activation[0]) > 0.0
    assert redirected.settings["relu_redirect"] is True
