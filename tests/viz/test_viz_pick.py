"""Channel choice: the most-changed filters (with the inception branch map) and the overlap extremes."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from ftprobe.core.errors import FtprobeError, ModelMismatch
from ftprobe.core.results import Result, Value
from ftprobe.functional.weight_change import filter_relative_change
from ftprobe.testing import TinyNet
from ftprobe.viz import filter_change, pick_most_changed, pick_overlap_extremes


def _bump(model, conv_path: str, filters: list[int], amount: float) -> None:
    with torch.no_grad():
        w = model.get_submodule(conv_path).weight
        for i, f in enumerate(filters):
            w[f] += amount * (len(filters) - i) * w[f].abs().mean()


def test_single_conv_block_ranks_its_filters():
    base = TinyNet()
    tuned = copy.deepcopy(base)
    _bump(tuned, "mixed3a.0", [9, 2, 14], 1.0)
    pick = pick_most_changed(base, tuned, "mixed3a", 16)
    assert pick.channels == (9, 2, 14) and pick.measure == "r"
    assert pick.values == pytest.approx([3.0, 2.0, 1.0])
    assert pick.source == "r_c of mixed3a.0" and pick.caption(0) == "r=3"


@pytest.fixture(scope="module")
def googlenet_pair():
    torch.manual_seed(0)
    base = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False)
    return base, copy.deepcopy(base)


def test_inception_branches_map_to_concatenated_channels(googlenet_pair):
    base, tuned = googlenet_pair
    tuned = copy.deepcopy(tuned)
    _bump(tuned, "inception4d.branch3.1.conv", [5], 2.0)  # branch3 starts after 112 + 288 channels
    _bump(tuned, "inception4d.branch1.conv", [7], 1.0)
    r, convs = filter_change(base, tuned, "inception4d", 528)
    assert convs == ["inception4d.branch1.conv", "inception4d.branch2.1.conv", "inception4d.branch3.1.conv",
                     "inception4d.branch4.1.conv"]
    assert r.shape == (528,)
    expected = filter_relative_change(base.inception4d.branch3[1].conv.weight, tuned.inception4d.branch3[1].conv.weight)
    torch.testing.assert_close(r[400:464], expected)
    assert pick_most_changed(base, tuned, "inception4d", 528, n=2).channels == (405, 7)


def test_plain_conv_block_of_googlenet(googlenet_pair):
    base, tuned = googlenet_pair
    r, convs = filter_change(base, tuned, "conv3", 192)
    assert convs == ["conv3.conv"] and r.shape == (192,) and float(r.abs().sum()) == 0.0


def test_unmappable_layers_say_use_channels(googlenet_pair):
    base, _ = googlenet_pair
    with pytest.raises(FtprobeError, match="contains no convolution.*--channels"):
        filter_change(base, base, "maxpool3", 480)
    with pytest.raises(FtprobeError, match="cannot map the filters.*--channels"):
        filter_change(base, base, "inception4d", 500)


def test_different_kernel_shapes_are_a_mismatch():
    with pytest.raises(ModelMismatch, match="kernel shapes differ"):
        filter_change(TinyNet(width=8), TinyNet(width=4), "mixed3a", 16)


def _result(overlaps: dict[tuple[str, str], list], layer: str = "inception4d", k: int = 100) -> Result:
    values = [Value("topk_overlap", layer, "pair", base=b, tuned=t,
                    arrays={f"overlap@{k}": ov, "overlap@1000": ov[::-1]}) for (b, t), ov in overlaps.items()]
    values.append(Value("cka", layer, "pair", base="base", tuned="tuned", scalars={"cka": 0.9}))
    return Result(layers=[{"spec": "mixed4d", "name": layer}], values=values)


def test_lowest_median_highest_with_ties_and_missing_values():
    ov = [50.0, 10.0, None, 90.0, 10.0, 90.0, 40.0]
    pick = pick_overlap_extremes(_result({("base", "tuned"): ov}), ["mixed4d"])
    # finite values sorted: 10(1) 10(4) 40(6) 50(0) 90(3) 90(5); median = sorted[(6 - 1) // 2] = 40 (channel 6)
    assert pick.channels == (1, 6, 3) and pick.roles == ("lowest", "median", "highest")
    assert pick.values == (10.0, 40.0, 90.0) and pick.measure == "overlap@100"
    assert pick.caption(0) == "overlap@100=10.0"


def test_k_choice_file_round_trip_and_pair_choice(tmp_path):
    res = _result({("base", "a"): [1.0, 2.0, 3.0], ("base", "b"): [3.0, 2.0, 1.0]})
    path = res.save(tmp_path / "results.json")
    assert pick_overlap_extremes(path, ["inception4d"], pair=("base", "b")).channels == (2, 1, 0)
    assert pick_overlap_extremes(path, ["inception4d"], pair=("base", "a"), k=1000).channels == (2, 1, 0)
    with pytest.raises(FtprobeError, match="several pairs"):
        pick_overlap_extremes(path, ["inception4d"])
    with pytest.raises(FtprobeError, match="no overlap@5 .*overlap@100, overlap@1000"):
        pick_overlap_extremes(path, ["inception4d"], k=5, pair=("base", "a"))


def test_single_pair_used_even_when_labels_differ_and_tiny_layers():
    pick = pick_overlap_extremes(_result({("x", "y"): [7.0]}), ["inception4d"], pair=("base", "tuned"))
    assert pick.channels == (0,) and pick.roles == ("lowest",)


@pytest.mark.parametrize("layers,match", [
    pytest.param(["inception5b"], "no topk_overlap values for layer 'inception5b'.*inception4d", id="other-layer"),
])
def test_missing_overlaps_explain_how_to_get_them(layers, match):
    with pytest.raises(FtprobeError, match=match):
        pick_overlap_extremes(_result({("base", "tuned"): [1.0]}), layers)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(FtprobeError, match="results file not found"):
        pick_overlap_extremes(tmp_path / "nope.json", ["mixed4d"])
