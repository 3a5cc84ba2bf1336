from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import ftprobe
from ftprobe.core.errors import MetricNeedsError, ModelMismatch
from ftprobe.core.results import Result
from ftprobe.testing import TinyNet, perturbed_copy


class Indexed(Dataset):
    """Random images with labels and their global index."""

    classes = ("a", "b", "c")

    def __init__(self, n=40, size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_identical_models_give_identity_results(tiny_pair):
    base, _ = tiny_pair
    r = ftprobe.compare(base, base, data=DataLoader(Indexed(), batch_size=8), metrics="cka,weight_l2,topk_overlap",
                        options={"topk_overlap": {"k": 5}})
    for v in r.select("cka"):
        if v.layer != "*":
            assert v.scalars["cka"] == pytest.approx(1.0, abs=1e-12)
    assert all(v.scalars["l2"] == 0.0 for v in r.select("weight_l2"))
    # Both models pick exactly the same images for every channel, and overlap is 100 for each channel with an image,
    # also one with fewer than k positive images (divided by the larger set, then); none in either: undefined.
    layers = [v.layer for v in r.select("topk_overlap") if v.scope == "pair"]
    assert layers
    for layer in layers:
        a = r.get("topk_overlap", layer, "topk_index@5", model="base")
        b = r.get("topk_overlap", layer, "topk_index@5", model="tuned")
        assert a == b
        per_channel = r.get("topk_overlap", layer, "overlap@5")
        assert all(o == 100.0 if row[0] >= 0 else math.isnan(o) for o, row in zip(per_channel, a))
        assert r.get("topk_overlap", layer, "overlap_mean@5") == 100.0


def test_shuffled_loader_cannot_pair_different_images(tiny_pair):
    base, tuned = tiny_pair
    ds = Indexed()
    kw = dict(metrics="cka,topk_overlap", options={"topk_overlap": {"k": 4}}, layers=["mixed3a", "mixed5b"])
    ordered = ftprobe.compare(base, tuned, data=DataLoader(ds, batch_size=8, shuffle=False), **kw)
    torch.manual_seed(123)
    shuffled = ftprobe.compare(base, tuned, data=DataLoader(ds, batch_size=8, shuffle=True), **kw)
    for layer in ("mixed3a", "mixed5b"):
        a = ordered.get("cka", layer, "cka")
        b = shuffled.get("cka", layer, "cka")
        assert a == pytest.approx(b, abs=1e-10) and a < 0.9999  # the models differ, and the order does not matter
        assert ordered.get("topk_overlap", layer, "topk_index@4", model="base") == \
            shuffled.get("topk_overlap", layer, "topk_index@4", model="base")
    same = ftprobe.compare(base, base, data=DataLoader(ds, batch_size=8, shuffle=True), metrics="cka",
                           layers=["mixed3a"])
    assert same.get("cka", "mixed3a", "cka") == pytest.approx(1.0, abs=1e-12)  # torch-cka's shuffle bug gives ≈0


def test_one_forward_per_model_per_batch(tiny_pair):
    base, tuned = tiny_pair
    third = perturbed_copy(base, 0.5, seed=7)
    calls = {"base": 0, "tuned": 0, "third": 0}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, k=k: calls.__setitem__(k, calls[k] + 1))
             for k, m in (("base", base), ("tuned", tuned), ("third", third))]
    try:
        ftprobe.compare(base, tuned, third, pairs="all", data=DataLoader(Indexed(n=24), batch_size=8),
                        metrics="cka,topk_overlap,class_concentration", options={"topk_*": {"k": 3}})
    finally:
        for h in hooks:
            h.remove()
    # one probe forward each, then one forward per batch (3 batches), whatever the number of metrics and pairs
    assert calls == {"base": 4, "tuned": 4, "third": 4}


def test_hooks_removed_and_flags_restored_when_the_pass_fails(tiny_pair):
    base, tuned = tiny_pair
    base.train()

    def bad_batches():
        ds = Indexed(n=16)
        yield ds.x[:8], ds.y[:8]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        ftprobe.compare(base, tuned, data=bad_batches(), metrics="cka")
    assert _hooks(base) == 0 and _hooks(tuned) == 0
    assert base.training and all(m.training for m in base.modules())


def test_ctrl_c_keeps_the_partial_result(tiny_pair):
    base, tuned = tiny_pair

    def batches():
        ds = Indexed(n=32)
        for i in range(0, 16, 8):
            yield ds.x[i:i + 8], ds.y[i:i + 8]
        raise KeyboardInterrupt

    r = ftprobe.compare(base, tuned, data=batches(), metrics="cka,weight_l2", layers=["mixed3a"])
    assert r.run["interrupted"] and r.run["samples"] == 16
    assert r.get("cka", "mixed3a", "n") == 16 and r.get("weight_l2", "mixed3a", "l2") > 0
    assert any("interrupted" in w for w in r.warnings)
    assert _hooks(base) == 0


def test_unmet_needs_skip_by_default_and_fail_when_named(tiny_pair):
    base, tuned = tiny_pair
    notes = []
    r = ftprobe.compare(base, tuned, layers="mixed3a", notice=notes.append)  # no data: only weight metrics run
    assert {v.metric for v in r.values} == {"weight_l2"}
    assert {s["metric"] for s in r.skipped_metrics} >= {"cka", "topk_overlap", "class_concentration"}
    assert any("needs data" in n for n in notes)
    with pytest.raises(MetricNeedsError, match="needs data"):
        ftprobe.compare(base, tuned, layers="mixed3a", metrics="cka")
    unlabelled = [(torch.randn(8, 3, 16, 16), None)]
    with pytest.raises(MetricNeedsError, match="labelled data"):
        ftprobe.compare(base, tuned, layers="mixed3a", metrics="class_concentration", data=unlabelled)


def test_unknown_option_lists_the_valid_ones(tiny_pair):
    base, tuned = tiny_pair
    with pytest.raises(MetricNeedsError, match="no option 'bogus'.*top_filters"):
        ftprobe.compare(base, tuned, layers="mixed3a", metrics="weight_l2", options={"weight_l2": {"bogus": 1}})


def test_layer_shapes_that_differ_fail_before_data():
    base = TinyNet(width=8)
    wider = TinyNet(width=12)

    progressed = []
    with pytest.raises(ModelMismatch, match="output shape"):
        ftprobe.compare(base, wider, layers="mixed3a", data=[(torch.randn(4, 3, 16, 16), None)], metrics="cka",
                        progress=progressed.append)
    assert progressed == []  # refused before the pass


def test_non_finite_activations_are_reported(tiny_pair):
    base, tuned = tiny_pair
    x = torch.randn(16, 3, 16, 16)
    x[3] = float("nan")
    r = ftprobe.compare(base, tuned, data=[(x, None)], metrics="cka", layers="mixed3a")
    assert any("non-finite" in w and "mixed3a" in w for w in r.warnings)


def test_result_json_round_trip_and_records(tiny_pair, tmp_path):
    base, tuned = tiny_pair
    r = ftprobe.compare(base, tuned, data=DataLoader(Indexed(n=16), batch_size=8), metrics="cka,weight_l2",
                        layers=["mixed3a", "mixed4d"])
    path = r.save(tmp_path / "results.json")
    back = Result.load(path)
    assert back.records() == r.records()
    assert json.loads(path.read_text())["schema_version"] == 2
    assert {rec["layer"] for rec in r.records()} >= {"mixed3a", "mixed4d"}
    assert r.layers[0]["spec"] == "mixed3a" and r.models[0]["label"] == "base"


def test_reused_module_layer_through_compare():
    from ftprobe.testing import ReuseNet

    base = ReuseNet()
    tuned = perturbed_copy(base, 0.3)
    r = ftprobe.compare(base, tuned, data=[(torch.randn(8, 3, 8, 8), None)], metrics="cka", layers=["act:2"])
    assert 0 < r.get("cka", "act:2", "cka") <= 1.0 + 1e-12


def test_image_folder_with_a_corrupt_file_is_counted_not_fatal(tiny_pair, tmp_path):
    from ftprobe.testing import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=5, size=24)
    (root / "class_0" / "broken.png").write_bytes(b"\x89PNG not really")
    base, tuned = tiny_pair
    r = ftprobe.compare(base, tuned, data=root, size=16, batch_size=4, metrics="cka,class_concentration",
                        layers="mixed3a", options={"class_concentration": {"k": 3}})
    assert r.run["samples"] == 10
    assert [f["path"].endswith("broken.png") for f in r.data["skipped_files"]] == [True]


def test_same_module_object_twice_is_copied_not_double_hooked():
    m = TinyNet()
    r = ftprobe.compare(m, m, data=[(torch.randn(8, 3, 16, 16), None)], metrics="cka", layers="mixed4d")
    assert r.get("cka", "mixed4d", "cka") == pytest.approx(1.0, abs=1e-12)
    assert _hooks(m) == 0


def test_user_module_device_is_restored(tiny_pair):
    base, tuned = tiny_pair
    ftprobe.compare(base, tuned, layers="mixed3a", metrics="weight_l2", device="cpu")
    assert next(base.parameters()).device.type == "cpu"




def test_class_count_of_a_plain_stream_comes_from_an_option(tiny_pair):
    base, tuned = tiny_pair
    batches = [(torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,)))]
    with pytest.raises(MetricNeedsError, match="num_classes=N"):
        ftprobe.compare(base, tuned, data=batches, metrics="class_concentration", layers="mixed3a")
    r = ftprobe.compare(base, tuned, data=batches, metrics="class_concentration", layers="mixed3a",
                        options={"class_concentration": {"num_classes": 4, "k": 2}})
    assert r.metrics["class_concentration"]["options"]["num_classes"] == 4
    assert any(v.metric == "class_concentration" for v in r.values)
