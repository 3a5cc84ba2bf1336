from __future__ import annotations

import pytest
import torch
from torch import nn

from ftprobe.core.capture import Capture, LayerPlan, evaluating, unwrap_output
from ftprobe.core.layers import probe
from ftprobe.testing import ReuseNet, TinyNet


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_after_exception_inside_loop():
    model = TinyNet()
    cap = Capture(model, {"mixed3a": LayerPlan(frozenset({"gap"}))})
    with pytest.raises(RuntimeError, match="boom"):
        with cap.attached():
            assert _hook_count(model) == 1
            cap.run(torch.zeros(2, 3, 16, 16))
            raise RuntimeError("boom")
    assert _hook_count(model) == 0


def test_hooks_removed_after_keyboard_interrupt():
    model = TinyNet()
    cap = Capture(model, {"mixed3a": LayerPlan(frozenset({"gap"}))})
    with pytest.raises(KeyboardInterrupt):
        with cap.attached():
            raise KeyboardInterrupt
    assert _hook_count(model) == 0


def test_training_flags_restored_per_module():
    model = TinyNet()
    model.train()
    model.mixed3a.eval()  # a mixed state must come back exactly
    before = {n: m.training for n, m in model.named_modules()}
    with evaluating(model):
        assert not any(m.training for m in model.modules())
    assert {n: m.training for n, m in model.named_modules()} == before


def test_training_flags_restored_after_error():
    model = TinyNet().train()
    with pytest.raises(ValueError):
        with evaluating(model):
            raise ValueError
    assert all(m.training for m in model.modules())


def test_reused_module_is_captured_per_call():
    model = ReuseNet()
    names = [i.name for i in probe(model, 8)]
    assert names == ["conv1", "act", "pair.conv", "pair", "conv2", "act:2", "named", "head"]
    cap = Capture(model, {"act": LayerPlan(frozenset({"raw"})), "act:2": LayerPlan(frozenset({"raw"}))})
    with cap.attached(), torch.no_grad():
        store = cap.run(torch.randn(2, 3, 8, 8))
    assert store["act"]["raw"].shape == (2, 4, 8, 8)
    assert store["act:2"]["raw"].shape == (2, 6, 8, 8)


def test_unwrap_rule_tuple_dict_nested():
    t = torch.ones(1)
    assert unwrap_output((t, torch.zeros(1))) is t
    assert unwrap_output({"a": "text", "b": [None, t]}) is t
    assert unwrap_output(("x", {"k": t})) is t
    assert unwrap_output(("x", 3)) is None


def test_tuple_and_dict_outputs_are_unwrapped_in_capture():
    model = ReuseNet()
    cap = Capture(model, {"pair": LayerPlan(frozenset({"gap"})), "named": LayerPlan(frozenset({"gap"}))})
    x = torch.randn(3, 3, 8, 8)
    with cap.attached(), torch.no_grad():
        store = cap.run(x)
    assert store["pair"]["gap"].shape == (3, 4)
    assert store["named"]["gap"].shape == (3, 6)


def test_forward_stops_after_deepest_hooked_layer():
    model = TinyNet()
    calls = []
    model.mixed5b.register_forward_pre_hook(lambda m, i: calls.append("mixed5b"))
    cap = Capture(model, {"mixed3a": LayerPlan(frozenset({"gap"}))}, stop_after="mixed3a")
    with cap.attached(), torch.no_grad():
        store = cap.run(torch.randn(2, 3, 16, 16))
    assert "mixed3a" in store and calls == []
    cap = Capture(model, {"mixed3a": LayerPlan(frozenset({"gap"}))}, stop_after=None)
    with cap.attached(), torch.no_grad():
        cap.run(torch.randn(2, 3, 16, 16))
    assert calls == ["mixed5b"]


def test_views_taken_before_a_later_inplace_op():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return torch.relu_(self.bn(x))

    model = Net().eval()
    info = {i.name: i for i in probe(model, 4)}
    assert info["bn"].inplace
    x = -torch.ones(1, 3, 4, 4)
    cap = Capture(model, {"bn": LayerPlan(frozenset({"gap", "flatten"}), clone=True)})
    with cap.attached(), torch.inference_mode():
        store = cap.run(x)
    assert torch.all(store["bn"]["gap"] < 0)  # the pre-ReLU values, not the zeros written in place afterwards
    assert torch.all(store["bn"]["flatten"] < 0)
