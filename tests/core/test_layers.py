from __future__ import annotations

import pytest
import torchvision

from ftprobe.core.errors import FtprobeError, LayerNotFound
from ftprobe.core.layers import list_layers, natural_layers, probe, resolve_layers
from ftprobe.testing import ReuseNet, TinyNet


@pytest.fixture(scope="module")
def googlenet():
    return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)


@pytest.fixture(scope="module")
def googlenet_infos(googlenet):
    return probe(googlenet, 64)


def test_mixed4d_resolves_on_torchvision_googlenet(googlenet, googlenet_infos):
    [r] = resolve_layers(googlenet, ["mixed4d"], googlenet_infos)
    assert (r.spec, r.name, r.via_alias, r.shape[0]) == ("mixed4d", "inception4d", True, 528)


def test_study_layers_have_the_papers_channel_counts(googlenet, googlenet_infos):
    names = ["conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d",
             "mixed4e", "mixed5a", "mixed5b"]
    channels = [r.shape[0] for r in resolve_layers(googlenet, names, googlenet_infos)]
    # PAPER.md lists mixed4a as 508 channels in Lucid's graph; torchvision's block has 512 (its branches differ).
    assert channels == [64, 64, 192, 256, 480, 512, 512, 512, 528, 832, 832, 1024]


def test_real_module_name_wins_over_alias():
    model = TinyNet()  # has a module really named mixed4d
    [r] = resolve_layers(model, ["mixed4d"], probe(model, 16))
    assert (r.name, r.via_alias) == ("mixed4d", False)


def test_glob_matches_within_one_component(googlenet, googlenet_infos):
    names = [r.name for r in resolve_layers(googlenet, ["inception4*"], googlenet_infos)]
    assert names == ["inception4a", "inception4b", "inception4c", "inception4d", "inception4e"]
    deep = [r.name for r in resolve_layers(googlenet, ["inception4a.**.conv"], googlenet_infos)]
    assert "inception4a.branch2.0.conv" in deep and all(n.startswith("inception4a.") for n in deep)


def test_glob_over_aliases(googlenet, googlenet_infos):
    names = [r.name for r in resolve_layers(googlenet, ["mixed5*"], googlenet_infos)]
    assert names == ["inception5a", "inception5b"]


def test_unknown_layer_suggests_close_names(googlenet, googlenet_infos):
    with pytest.raises(LayerNotFound) as err:
        resolve_layers(googlenet, ["inception4x"], googlenet_infos)
    assert "Did you mean" in str(err.value) and "inception4e" in str(err.value)
    assert "ftprobe layers" in str(err.value)


def test_module_that_never_runs_is_explained():
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    with pytest.raises(FtprobeError, match="does not run"):
        resolve_layers(model, ["aux1"], probe(model, 64))


def test_naming_convention_pinned_on_hand_built_module():
    model = ReuseNet()
    assert [i.name for i in probe(model, 8)] == ["conv1", "act", "pair.conv", "pair", "conv2", "act:2", "named",
                                                 "head"]
    resolved = resolve_layers(model, ["act:2", "act:*"], probe(model, 8))
    assert [r.name for r in resolved] == ["act:2"]  # act:* matches only repeated calls; act:2 already chosen
    assert [r.name for r in resolve_layers(model, ["act"], probe(model, 8))] == ["act"]


def test_natural_layers(googlenet, googlenet_infos):
    assert natural_layers(googlenet, googlenet_infos)[0] == "conv1"
    assert len(natural_layers(googlenet, googlenet_infos)) == 12
    tiny = TinyNet()
    assert natural_layers(tiny, probe(tiny, 16)) == ["conv2d0", "conv2d1", "mixed3a", "mixed4a", "mixed4d",
                                                     "mixed5b"]


def test_list_layers_filter_and_calls():
    infos = list_layers(ReuseNet(), "act*", input_size=8)
    assert [i.name for i in infos] == ["act"]
    assert infos[0].calls == 2
