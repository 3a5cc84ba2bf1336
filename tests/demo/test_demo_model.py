"""The demo CNN: the study's layer names resolve, block outputs are post-ReLU, new heads and re-inits are seeded."""

from __future__ import annotations

import torch

import ftprobe
from ftprobe.demo.model import LAYERS, LOWER_LAYERS, DemoNet


def test_layer_names_resolve_in_depth_order():
    infos = ftprobe.list_layers(DemoNet(6), input_size=32)
    names = [i.name for i in infos]
    assert [n for n in names if n in LAYERS] == list(LAYERS)
    assert LAYERS[0] == "conv2d0" and LAYERS[-1] == "mixed5b" and LOWER_LAYERS[-1] == "mixed3b"


def test_compare_resolves_every_layer_between_heads_of_different_size():
    base, tuned = DemoNet(6, seed=0), DemoNet(6, seed=0).new_head(5, seed=1)
    result = ftprobe.compare(base, tuned, layers=list(LAYERS), metrics="weight_l2", input_size=32, device="cpu")
    assert [entry["name"] for entry in result.layers] == list(LAYERS)
    assert all(result.get("weight_l2", name, "l2") == 0 for name in LAYERS)  # only the head differs


def test_block_outputs_are_post_relu_and_shrink():
    model = DemoNet(6).eval()
    seen = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in LAYERS]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    for h in hooks:
        h.remove()
    assert all(float(seen[n].min()) >= 0 for n in LAYERS)
    assert seen["conv2d0"].shape == (2, 8, 32, 32) and seen["mixed5b"].shape == (2, 48, 4, 4)


def test_seeding_is_local_and_reproducible():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = DemoNet(6, seed=5)
    assert torch.equal(torch.rand(1), before)  # building a seeded model left the global stream alone
    b = DemoNet(6, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(a.new_head(4, seed=2).fc.weight, b.new_head(4, seed=2).fc.weight)


def test_reinit_touches_only_the_named_blocks():
    model = DemoNet(6, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reinit(["mixed5a", "mixed5b"], seed=9)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"mixed5a", "mixed5b"}
