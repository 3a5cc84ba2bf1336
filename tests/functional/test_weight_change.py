from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from ftprobe.core.metric import WeightStep
from ftprobe.functional.weight_change import (
    filter_relative_change,
    kernel_cosine,
    most_changed_filters,
    relative_l2_change,
    weight_l2_change,
)
from ftprobe.metrics.weight_change import WeightChange
from ftprobe.testing import TinyNet, perturbed_copy


def test_identical_kernels_change_exactly_zero():
    w = torch.randn(8, 4, 3, 3)
    assert weight_l2_change(w, w.clone()).item() == 0.0
    assert filter_relative_change(w, w.clone()).abs().max().item() == 0.0


def test_known_perturbation_matches_hand_value():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    t = w.clone()
    t[2, 1, 0, 0] += 3.0
    t[5, 0, 2, 2] -= 4.0
    assert weight_l2_change(w, t).item() == pytest.approx(5.0, abs=1e-6)  # float32 storage of w + 3
    wn = w.double().numpy()
    assert relative_l2_change(w, t).item() == pytest.approx(5.0 / np.linalg.norm(wn), rel=1e-6)
    r = filter_relative_change(w, t)
    expected_2 = 3.0 / 36 / np.abs(wn[2]).mean()
    assert r[2].item() == pytest.approx(expected_2, rel=1e-6)
    assert most_changed_filters(r, 2).tolist() == sorted([2, 5], key=lambda i: -r[i].item())


def test_float64_reference_on_random_kernels():
    g = torch.Generator().manual_seed(3)
    b, t = torch.randn(6, 3, 5, 5, generator=g), torch.randn(6, 3, 5, 5, generator=g)
    bn, tn = b.double().numpy(), t.double().numpy()
    assert weight_l2_change(b, t).item() == pytest.approx(np.sqrt(((tn - bn) ** 2).sum()), rel=1e-12)
    rc = np.abs(tn - bn).reshape(6, -1).mean(1) / np.abs(bn).reshape(6, -1).mean(1)
    np.testing.assert_allclose(filter_relative_change(b, t).numpy(), rc, rtol=1e-12)
    cos = (bn * tn).sum() / np.linalg.norm(bn) / np.linalg.norm(tn)
    assert kernel_cosine(b, t).item() == pytest.approx(cos, rel=1e-12)


def test_metric_identical_models_zero_and_module_list():
    m = TinyNet()
    metric = WeightChange()
    metric.update(WeightStep("mixed3a", m.mixed3a, m.mixed3a))
    out = metric.compute()
    assert out["l2"].item() == 0.0 and out["modules"] == ["mixed3a.0"]


def test_metric_layer_sum_is_root_sum_of_squares():
    base = TinyNet()
    tuned = perturbed_copy(base, 0.3)
    metric = WeightChange(cosine=True)
    metric.update(WeightStep("net", base, tuned))
    out = metric.compute()
    per = torch.as_tensor(out["module_l2"])
    assert out["l2"].item() == pytest.approx(per.pow(2).sum().sqrt().item(), rel=1e-12)
    assert len(out["modules"]) == 7 and len(out["module_cosine"]) == 7  # 6 convs + fc
    assert WeightChange(modules="conv").__class__  # option accepted
    conv_only = WeightChange(modules="conv")
    conv_only.update(WeightStep("net", base, tuned))
    assert len(conv_only.compute()["modules"]) == 6


def test_replaced_head_is_reported_not_measured():
    base = torchvision.models.resnet18()
    tuned = torchvision.models.resnet18(num_classes=7)
    metric = WeightChange()
    metric.update(WeightStep("fc", base.fc, tuned.fc))
    out = metric.compute()
    assert out["replaced"] == ["fc"] and out["modules_measured"] == 0 and torch.isnan(out["l2"])


def test_googlenet_study_set_is_57_convs():
    g = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    blocks = ["conv1", "conv2", "conv3"] + [f"inception{b}" for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e",
                                                                       "5a", "5b")]
    total = 0
    for name in blocks:
        metric = WeightChange(modules="conv")
        mod = g.get_submodule(name)
        metric.update(WeightStep(name, mod, mod))
        total += len(metric.compute()["modules"])
    assert total == 57  # PAPER.md: 57 conv layers, auxiliary heads excluded


def test_state_round_trip_and_merge(tmp_path):
    base = TinyNet()
    tuned = perturbed_copy(base)
    a = WeightChange()
    a.update(WeightStep("net", base, tuned))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = WeightChange()
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert b.compute()["modules"] == a.compute()["modules"]
    fresh = WeightChange()
    fresh.merge_state(a)
    assert fresh.compute()["l2"].item() == a.compute()["l2"].item()
    a.reset()
    assert a.compute()["modules_measured"] == 0
