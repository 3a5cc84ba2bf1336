"""Feature visualisation on TinyNet: it drives channels far above natural-ish images, repeats bitwise, respects the
model's preprocessing, and leaves the model as it found it."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ftprobe.core.errors import FtprobeError, LayerNotFound
from ftprobe.data import normalize
from ftprobe.testing import TinyNet, natural_images
from ftprobe.viz import ChannelVisualizer, channel_count, layer_scores, resolve_layer, visualize, visualize_channels


@pytest.mark.slow
def test_acceptance_optimised_image_drives_every_channel_3x_above_natural_images():
    # Every channel of mixed4a (16); the Fourier/decorrelated parameterisation, Adam lr 0.05, redirected ReLU, the
    # model's preprocessing; the random transforms off: at 32 px Lucid's pixel-sized jitter moves the picture by a
    # quarter of its side, which TinyNet's phase-locked stride-2 filters do not survive. With the transforms on, on a
    # trained model, most channels but not all reach 3×: benchmarks/bench_featvis_strength.py and RESULTS.md.
    net = TinyNet()
    layer = resolve_layer(net, "mixed4a", 32)
    channels = list(range(channel_count(layer)))
    assert len(channels) == 16
    dataset_max = layer_scores(net, layer, natural_images(64, 32)).amax(dim=0)  # (C,)
    vis = visualize_channels(net, "mixed4a", channels, steps=384, size=32, seed=0, transforms=[])
    ratio = vis.activation / dataset_max
    assert bool((ratio >= 3.0).all()), ratio  # one seed, one image: test_same_seed_same_image_bitwise_*


def test_default_pipeline_raises_the_objective_of_live_channels():
    net = TinyNet()
    start = visualize_channels(net, "mixed3a", list(range(8)), steps=0, size=32).activation
    vis = visualize_channels(net, "mixed3a", list(range(8)), steps=96, size=32)
    early, late = vis.objective[:16].mean(dim=0), vis.objective[-16:].mean(dim=0)
    live = start > 0
    assert live.sum() >= 2
    assert bool((late[live] > early[live]).all()) and bool((vis.activation[live] > start[live]).all())
    assert bool((late >= early - 1e-3).all())


def test_same_seed_same_image_bitwise_other_seed_differs():
    net = TinyNet()
    a = visualize_channels(net, "mixed4a", [1, 5], steps=12, size=32, seed=3)
    b = visualize_channels(net, "mixed4a", [1, 5], steps=12, size=32, seed=3)
    c = visualize_channels(net, "mixed4a", [1, 5], steps=12, size=32, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.objective, b.objective)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (2, 3, 32, 32) and a.objective.shape == (12, 2)
    assert [im.size for im in a.to_pil()] == [(32, 32), (32, 32)]


def test_channels_of_a_batch_are_optimised_independently():
    net = TinyNet()
    together = visualize_channels(net, "mixed3a", [1, 7], steps=8, size=32, transforms=[])
    alone = visualize_channels(net, "mixed3a", [1], steps=8, size=32, transforms=[])
    # Image 0 starts from the same spectrum either way; with no transforms its path depends on its channel only.
    torch.testing.assert_close(together.images[0], alone.images[0], atol=1e-5, rtol=0)


def test_model_left_untouched_hooks_removed_flags_restored_no_param_grads():
    net = TinyNet().train()
    net.mixed4a.eval()  # a mixed pattern of flags must come back exactly
    flags = {n: m.training for n, m in net.named_modules()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen_fc = []
    net.fc.register_forward_hook(lambda *a: seen_fc.append(1))
    visualize_channels(net, "mixed3a", [0], steps=3, size=32)
    assert seen_fc == [1]  # only the probe forward of the layer lookup ran the head: every step stopped early
    assert {n: m.training for n, m in net.named_modules()} == flags
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN statistics untouched (eval)
    assert all(p.grad is None for p in net.parameters()) and all(p.requires_grad for p in net.parameters())
    assert all(not m._forward_hooks for n, m in net.named_modules() if n != "fc")


def test_hooks_removed_when_a_step_fails():
    net = TinyNet().train()

    def boom(_x, _g):
        raise RuntimeError("transform failed")

    with pytest.raises(RuntimeError, match="transform failed"):
        visualize_channels(net, "mixed3a", [0], steps=2, size=32, transforms=boom)
    assert all(not m._forward_hooks for m in net.modules()) and net.training and net.mixed3a.training


def test_the_picture_is_in_the_colours_the_model_sees():
    # An identity "model": its layer is the normalised input, so maximising input channel 0 asks for much of the
    # model's first channel: red in torchvision's RGB preprocessing, blue in caffe's BGR.
    ident = nn.Sequential(nn.Identity())
    red = visualize_channels(ident, "0", [0], steps=30, size=16, preprocess="imagenet", transforms=[])
    blue = visualize_channels(ident, "0", [0], steps=30, size=16, preprocess="caffe", transforms=[])
    assert red.images[0].mean(dim=(1, 2)).argmax() == 0 and blue.images[0].mean(dim=(1, 2)).argmax() == 2
    img = torch.rand(2, 3, 8, 8)
    scores = layer_scores(ident, resolve_layer(ident, "0", 8), img, "caffe")
    torch.testing.assert_close(scores, normalize(img, "caffe").mean(dim=(2, 3)))
    assert red.settings["preprocess"] == "imagenet" and blue.settings["preprocess"] == "caffe"


def test_activation_is_the_layer_score_of_the_final_image():
    net = TinyNet()
    vis = visualize_channels(net, "mixed4a", [2, 6], steps=5, size=32, preprocess="caffe")
    scores = layer_scores(net, resolve_layer(net, "mixed4a", 32), vis.images, "caffe")
    torch.testing.assert_close(vis.activation, scores[[0, 1], [2, 6]], atol=1e-6, rtol=1e-5)


def test_fixed_input_size_resizes_the_transformed_image():
    seen = []
    net = TinyNet()
    net.conv2d0.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[-2:])))
    visualize_channels(net, "conv2d1", [0], steps=2, size=32, input_size=40)
    assert set(seen) == {(40, 40)}


def test_googlenet_alias_and_several_models_share_seed():
    torch.manual_seed(0)
    g = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False)
    layer = resolve_layer(g, "mixed4d", 64)
    assert (layer.name, channel_count(layer)) == ("inception4d", 528)
    rows = visualize([g, g], "mixed4d", [0, 527], steps=1, size=64, labels=["base", "tuned"])
    assert [r.model for r in rows] == ["base", "tuned"] and rows[0].layer == "inception4d"
    assert rows[0].spec == "mixed4d" and torch.equal(rows[0].images, rows[1].images)


@pytest.mark.parametrize("layer,channels,err,match", [
    pytest.param("mixed4a", [16], FtprobeError, "has 16 channels", id="channel-out-of-range"),
    pytest.param("mixed4a", [], FtprobeError, "no channel", id="no-channel"),
    pytest.param("mixed*", [0], FtprobeError, "takes one layer", id="glob-matches-several"),
    pytest.param("mixed4x", [0], LayerNotFound, "Did you mean", id="unknown-layer"),
])
def test_user_errors(layer, channels, err, match):
    with pytest.raises(err, match=match):
        visualize_channels(TinyNet(), layer, channels, steps=1, size=32)


def test_visualizer_outside_with_block_is_a_bug():
    net = TinyNet()
    vis = ChannelVisualizer(net, resolve_layer(net, "mixed3a", 32), [0], size=32)
    with pytest.raises(RuntimeError, match="with"):
        vis.step()


def test_two_visualizers_on_one_model_do_not_cut_each_other_short():
    net = TinyNet()
    with ChannelVisualizer(net, resolve_layer(net, "mixed3a", 32), [0], size=32) as a, \
            ChannelVisualizer(net, resolve_layer(net, "mixed4a", 32), [1], size=32) as b:
        for _ in range(2):
            b.step()  # runs through a's hooked layer first: a's hook must not stop b's forward
            a.step()
        assert a.images().shape == b.images().shape == (1, 3, 32, 32)
