"""Training helpers: the study's optimiser groups, best-on-validation, frozen blocks, accuracy measures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ftprobe.demo.model import DemoNet, backbone_parameters, head_parameters
from ftprobe.demo.train import (
    TensorBatches,
    average_precision,
    evaluate,
    fit,
    freeze,
    replace_head,
    sgd,
    topk_accuracy,
)


def _data(n=40, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_average_precision_by_hand():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    targets = torch.tensor([[1], [0], [1], [0]])
    # positives at ranks 1 and 3: precisions 1 and 2/3
    assert average_precision(scores, targets)["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    perfect = average_precision(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([[1, 0], [0, 1]]))
    assert perfect["mAP"] == pytest.approx(100.0)
    assert math.isnan(average_precision(scores, torch.zeros(4, 1, dtype=torch.int64))["mAP"])


def test_topk_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    acc = topk_accuracy(logits, torch.tensor([1, 2]), ks=(1, 3, 5))
    assert acc == {"top1": 50.0, "top3": 100.0, "top5": 100.0}


def test_batches_shuffle_reproducibly_and_cover_every_sample():
    x, y = _data()
    a, b = TensorBatches(x, y, 16, seed=3), TensorBatches(x, y, 16, seed=3)
    ya, yb = [t for _, t in a], [t for _, t in b]
    assert all(torch.equal(p, q) for p, q in zip(ya, yb)) and len(a) == 3
    assert sorted(torch.cat(ya).tolist()) == sorted(y.tolist())
    assert not all(torch.equal(p, q) for p, q in zip(ya, [t for _, t in a]))  # the next pass is reshuffled


def test_sgd_has_one_learning_rate_per_group_and_skips_frozen():
    model = DemoNet(3)
    freeze(model, ["conv2d0"])
    opt = sgd([(head_parameters(model), 0.01), (backbone_parameters(model), 0.001)])
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.001]
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    frozen = {id(p) for p in model.conv2d0.parameters()}
    assert not any(id(p) in frozen for g in opt.param_groups for p in g["params"])


def test_fit_keeps_the_best_epoch_on_validation_loss_and_freezes_blocks():
    x, y = _data(64)
    xv, yv = _data(32, seed=1)
    model = DemoNet(3, width=4, seed=0)
    frozen = freeze(model, ["conv2d0"])
    conv_before = {k: v.clone() for k, v in model.conv2d0.state_dict().items()}
    val = TensorBatches(xv, yv, 32, shuffle=False)
    hist = fit(model, sgd([(model.parameters(), 0.5)]), TensorBatches(x, y, 16, seed=0), epochs=4, val=val,
               frozen=frozen)
    losses = [v["loss"] for v in hist.val]
    assert hist.best_epoch == losses.index(min(losses))
    assert evaluate(model, val)["loss"] == pytest.approx(min(losses), rel=1e-6)
    assert all(torch.equal(v, model.conv2d0.state_dict()[k]) for k, v in conv_before.items())  # BN stats too
    assert not model.training


def test_fit_multi_label_reports_map():
    x, _ = _data(32)
    y = (torch.rand(32, 4, generator=torch.Generator().manual_seed(2)) > 0.5).long()
    model = DemoNet(4, width=4)
    fit(model, sgd([(model.parameters(), 0.1)]), TensorBatches(x, y, 16), epochs=1)
    out = evaluate(model, TensorBatches(x, y, 32, shuffle=False))
    assert set(out) == {"loss", "n", "mAP"} and 0 <= out["mAP"] <= 100


@pytest.mark.parametrize("kind", ["fc", "classifier"])
def test_replace_head_is_seeded(kind):
    def make():
        if kind == "fc":
            m = nn.Module()
            m.fc = nn.Linear(8, 10)
        else:
            m = nn.Module()
            m.classifier = nn.Sequential(nn.Dropout(), nn.Linear(8, 10))
        return m

    a, b = replace_head(make(), 3, seed=1), replace_head(make(), 3, seed=1)
    la = a.fc if kind == "fc" else a.classifier[1]
    lb = b.fc if kind == "fc" else b.classifier[1]
    assert la.out_features == 3 and torch.equal(la.weight, lb.weight)
