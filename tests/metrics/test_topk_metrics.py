"""TopKOverlap and ClassConcentration: shared state, setup refusals, streaming/merging, identical models, oracles."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from ftprobe.core.errors import MetricNeedsError, ModelMismatch
from ftprobe.core.metric import Activation, ModelStep, Need, RunContext, Scope
from ftprobe.metrics.class_concentration import ClassConcentration
from ftprobe.metrics.topk_overlap import TopKOverlap

C = 6
CTX = RunContext(has_labels=True, num_classes=5, batch_size=8, num_samples=100, shapes={"l": (C, 4, 4)})


def _data(seed: int, n: int = 100, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Post-ReLU-like scores (N, C), global indices (N,), labels (N,) in [0, 5); channel 5 is dead."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.relu(torch.randn(n, C, generator=g) + shift)
    scores[:, 5] = 0.0
    labels = torch.randint(0, 5, (n,), generator=g)
    return scores, torch.arange(n), labels


def _feed(metric, scores, index, labels, batch: int = 8, view: str = "gap"):
    for lo in range(0, scores.shape[0], batch):
        act = Activation("l", {view: scores[lo : lo + batch]})
        lab = None if labels is None else labels[lo : lo + batch]
        metric.update(ModelStep(layer="l", act=act, index=index[lo : lo + batch], labels=lab))
    return metric


def _ready(cls, ctx: RunContext = CTX, **opts):
    m = cls(**opts)
    m.setup(ctx)
    return m


def _assert_results_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key].nan_to_num(-7.0), b[key].nan_to_num(-7.0)), key
        else:
            assert (a[key] == b[key]) or (math.isnan(a[key]) and math.isnan(b[key])), key


# ------------------------------------------------------------------------------------------------ declaration


def test_class_attributes_views_and_shared_state_key() -> None:
    ov, cc = TopKOverlap(k=(10, 50)), ClassConcentration(k=50, measure="gini")
    assert ov.scope is cc.scope is Scope.MODEL and ov.layerwise and cc.layerwise
    assert cc.needs == Need.ACTIVATIONS | Need.LABELS and Need.LABELS not in ov.needs
    assert ov.views() == frozenset({"gap"}) and TopKOverlap(score="max").views() == frozenset({"max"})
    assert ov.state_key() == cc.state_key() is not None
    assert ov.state_key() != TopKOverlap(k=50, score="max").state_key()
    assert ov.state_key() != TopKOverlap(k=50, positive_only=False).state_key()
    assert TopKOverlap(k="all").state_key() == ClassConcentration(k=(5, "all")).state_key()
    assert ov.options() == {"k": (10, 50), "score": "mean", "positive_only": True, "max_memory_gb": 4.0}


@pytest.mark.parametrize(
    ("cls", "opts", "match"),
    [
        pytest.param(TopKOverlap, {"k": 0}, "k=0", id="k-zero"),
        pytest.param(TopKOverlap, {"k": "some"}, "k='some'", id="k-word"),
        pytest.param(TopKOverlap, {"score": "median"}, "score", id="score"),
        pytest.param(TopKOverlap, {"max_memory_gb": 0}, "max_memory_gb", id="memory"),
        pytest.param(ClassConcentration, {"measure": "variance"}, "measure", id="measure"),
    ],
)
def test_bad_options_refused(cls, opts: dict, match: str) -> None:
    with pytest.raises(MetricNeedsError, match=match):
        cls(**opts)


# ------------------------------------------------------------------------------------------------ setup


def test_setup_refuses_missing_labels_with_fix() -> None:
    ctx = RunContext(has_labels=False, shapes={"l": (C, 4, 4)}, num_samples=100)
    with pytest.raises(MetricNeedsError, match="class sub-folders.*CSV with a label column"):
        ClassConcentration().setup(ctx)
    assert TopKOverlap().setup(ctx)  # the overlap needs no labels; it returns its memory note


def test_setup_refuses_too_many_multilabel_classes() -> None:
    ctx = RunContext(has_labels=True, num_classes=64, multilabel=True, shapes={"l": (C,)}, num_samples=10)
    with pytest.raises(MetricNeedsError, match="63"):
        ClassConcentration().setup(ctx)
    ClassConcentration().setup(RunContext(has_labels=True, num_classes=63, multilabel=True, num_samples=10))
    ClassConcentration().setup(RunContext(has_labels=True, num_classes=64, multilabel=False, num_samples=10))


def test_setup_memory_estimate_and_refusal_for_all() -> None:
    big = RunContext(has_labels=True, num_classes=25, num_samples=60_000, shapes={"a": (1024, 7, 7), "b": (64, 56, 56)})
    # pass: 8 B x 60000 x 1088 channels; final sort of the widest layer: 40 B x 60000 x 1024; total ~2.98 GB
    with pytest.raises(MetricNeedsError, match=r"about 2\.98 GB.*max_memory_gb=0\.5.*finite k"):
        TopKOverlap(k="all", max_memory_gb=0.5).setup(big)
    (note,) = TopKOverlap(k="all").setup(big)
    assert "GB per model" in note and "60000 samples" in note
    assert TopKOverlap(k=(100, 1000)).setup(big)  # finite k stays small
    unknown = RunContext(shapes={"a": (8, 2, 2)})
    assert "memory is unknown" in TopKOverlap(k="all").setup(unknown)[0]
    assert "MB per model" in TopKOverlap(k=10).setup(CTX)[0]


# ------------------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("cls", [TopKOverlap, ClassConcentration], ids=["overlap", "concentration"])
def test_stream_equals_merged_shards_in_any_order(cls) -> None:
    scores, index, labels = _data(1)
    seq = _feed(_ready(cls, k=(5, 20)), scores, index, labels, batch=7)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(2))
    shuffled = _feed(_ready(cls, k=(5, 20)), scores[perm], index[perm], labels[perm], batch=16)
    shards = [_feed(_ready(cls, k=(5, 20)), scores[s], index[s], labels[s]) for s in (perm[:30], perm[30:])]
    shards[1].merge_state(shards[0])
    _assert_results_equal(seq.compute(), shuffled.compute())
    _assert_results_equal(seq.compute(), shards[1].compute())


def test_shared_state_copied_from_overlap_into_concentration() -> None:
    scores, index, labels = _data(3)
    ov = _feed(_ready(TopKOverlap, k=20), scores, index, labels)
    direct = _feed(_ready(ClassConcentration, k=20), scores, index, labels)
    cc = _ready(ClassConcentration, k=20)
    assert ov.state_key() == cc.state_key()
    cc.load_state_dict(ov.state_dict())
    _assert_results_equal(cc.compute(), direct.compute())


def test_concentration_without_stored_labels_is_a_clear_error() -> None:
    scores, index, _ = _data(4)
    ov = _feed(_ready(TopKOverlap), scores, index, None)
    cc = _ready(ClassConcentration)
    cc.load_state_dict(ov.state_dict())
    with pytest.raises(RuntimeError, match="without labels"):
        cc.compute()


def test_state_round_trip_weights_only_and_reset() -> None:
    scores, index, labels = _data(5)
    m = _feed(_ready(ClassConcentration, k=(3, 30)), scores, index, labels)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = _ready(ClassConcentration, k=(3, 30))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    _assert_results_equal(fresh.compute(), m.compute())
    m.reset()
    assert m.compute()["dead_channels"] == 0 and m.compute()["entropy@3"].numel() == 0


def test_score_max_reads_the_max_view() -> None:
    scores, index, labels = _data(6)
    m = _feed(_ready(TopKOverlap, k=4, score="max"), scores, index, labels, view="max")
    with pytest.raises(KeyError, match="views"):
        _feed(_ready(TopKOverlap, k=4, score="max"), scores, index, labels, view="gap")
    assert m.compute()["topk_index@4"].shape == (C, 4)


# ------------------------------------------------------------------------------------------------ values


def test_identical_models_overlap_100_and_equal_concentration() -> None:
    scores, index, labels = _data(7)
    base_o, tuned_o = (_feed(_ready(TopKOverlap, k=(10, "all")), scores, index, labels) for _ in range(2))
    res = base_o.compare(base_o, tuned_o)
    for k in (10, "all"):  # channel 5 is dead in both: no overlap to measure, left out and counted
        assert res[f"overlap@{k}"][:5].tolist() == [100.0] * 5 and math.isnan(res[f"overlap@{k}"][5])
        assert [res[f"overlap_{s}@{k}"] for s in ("mean", "median", "q1", "q3")] == [100.0] * 4
    assert res["dead_in_both"] == 1 and "1 of 6 channels" in res["note"]
    base_c, tuned_c = (_feed(_ready(ClassConcentration, k=10), scores, index, labels) for _ in range(2))
    cmp = base_c.compare(base_c, tuned_c)
    assert cmp["entropy_mean_change@10"] == 0.0 and cmp["entropy_median_change@10"] == 0.0
    assert cmp["entropy_change@10"][:5].tolist() == [0.0] * 5 and math.isnan(cmp["entropy_change@10"][5])


def test_dead_channels_counted_and_skipped() -> None:
    scores, index, labels = _data(8)
    ov = _feed(_ready(TopKOverlap, k=10), scores, index, labels).compute()
    cc = _feed(_ready(ClassConcentration, k=10), scores, index, labels).compute()
    assert ov["dead_channels"] == cc["dead_channels"] == 1
    assert ov["topk_index@10"][5].tolist() == [-1] * 10 and ov["topk_score@10"][5].isinf().all()
    assert math.isnan(cc["entropy@10"][5]) and cc["dominant_class@10"][5] == -1
    assert cc["entropy_mean@10"] == pytest.approx(float(cc["entropy@10"][:5].mean()))


def test_compare_refuses_different_options_and_mismatched_layers() -> None:
    scores, index, labels = _data(9)
    a = _feed(_ready(TopKOverlap, k=10), scores, index, labels)
    with pytest.raises(ValueError, match="different options"):
        a.compare(a, _feed(_ready(TopKOverlap, k=11), scores, index, labels))
    narrow = _feed(_ready(TopKOverlap, k=10), scores[:, :3], index, labels)
    with pytest.raises(ModelMismatch, match="channels"):
        a.compare(a, narrow)


def test_multilabel_concentration_hand_example() -> None:
    ctx = RunContext(has_labels=True, num_classes=3, multilabel=True, num_samples=4, shapes={"l": (1,)})
    scores = torch.tensor([[4.0], [3.0], [2.0], [0.0]])
    multi_hot = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]])
    res = _feed(_ready(ClassConcentration, ctx, k=(1, 3)), scores, torch.arange(4), multi_hot, batch=2).compute()
    # top-1 = image 0 with classes {0, 1}: p = (1/2, 1/2, 0); top-3 = images 0, 1, 2: counts (2, 1, 1)
    assert res["entropy@1"].item() == pytest.approx(math.log(2) / math.log(3))
    p = np.array([2, 1, 1]) / 4
    assert res["entropy@3"].item() == pytest.approx(float(-(p * np.log2(p)).sum() / np.log2(3)))
    assert res["dominant_class@3"].tolist() == [0] and res["dominant_share@3"].item() == pytest.approx(0.5)
    assert res["class_histogram@3"].tolist() == [[2.0, 1.0, 1.0]]


def test_random_case_matches_numpy_bruteforce() -> None:
    scores_b, index, labels = _data(10)
    scores_t = torch.relu(scores_b + 0.3 * torch.randn(100, C, generator=torch.Generator().manual_seed(11)))
    scores_t[:, 5] = 0.0
    k = 15
    ov = [_feed(_ready(TopKOverlap, k=k), s, index, labels, batch=9) for s in (scores_b, scores_t)]
    cc = [_feed(_ready(ClassConcentration, k=k), s, index, labels, batch=9) for s in (scores_b, scores_t)]
    got_ov = ov[0].compare(*ov)[f"overlap@{k}"].numpy()
    got_h = cc[1].compute()[f"entropy@{k}"].numpy()
    sb, st_, lab = scores_b.double().numpy(), scores_t.double().numpy(), labels.numpy()
    for c in range(C):
        top = []
        for s in (sb, st_):
            order = sorted((i for i in range(100) if s[i, c] > 0), key=lambda i: (-s[i, c], i))[:k]
            top.append(order)
        if not top[0] and not top[1]:  # dead in both (channel 5): undefined, not 0
            assert np.isnan(got_ov[c])
        else:  # 100 images: every live channel has k positive images in one model at least, so |∩| / k
            assert got_ov[c] == pytest.approx(len(set(top[0]) & set(top[1])) / k * 100, abs=1e-12)
        if not top[1]:
            assert np.isnan(got_h[c])
            continue
        p = np.bincount(lab[top[1]], minlength=5) / len(top[1])
        p = p[p > 0]
        assert got_h[c] == pytest.approx(-(p * np.log2(p)).sum() / np.log2(5), abs=1e-12)


# ------------------------------------------------------------------------------------------------ fewer images than k


@pytest.mark.parametrize("k", [30, 100, 1000, (5, 100, "all")], ids=str)
def test_fewer_images_than_k_identical_models_give_100_and_say_which_k_was_used(k) -> None:
    # 30 images: every channel has at most 30 positive images, many fewer (the sparse channels below)
    scores, index, labels = _data(12, n=30, shift=-0.3)
    ctx = RunContext(has_labels=True, num_classes=5, batch_size=8, num_samples=30, shapes={"l": (C, 4, 4)})
    base, tuned = (_feed(_ready(TopKOverlap, ctx, k=k), scores, index, labels) for _ in range(2))
    res = base.compare(base, tuned)
    positives = (scores > 0).sum(dim=0)
    for kk in base._ks:
        assert [res[f"overlap_{s}@{kk}"] for s in ("mean", "median", "q1", "q3")] == [100.0] * 4
        if kk == "all" or kk <= int(positives[:5].min()):
            assert f"k_used_min@{kk}" not in res  # the sets hold k images: nothing to say
            continue
        used = positives[:5].clamp(max=kk)
        assert res[f"k_used@{kk}"].tolist() == [*used.tolist(), 0]
        assert (res[f"k_used_min@{kk}"], res[f"k_used_max@{kk}"]) == (int(used.min()), int(used.max()))
        assert f"k={kk}:" in res["note"] and "fewer than" in res["note"]


def test_overlap_changes_only_where_both_sets_are_shorter_than_k() -> None:
    scores_b, index, labels = _data(13, n=40, shift=-0.5)
    scores_t = torch.relu(scores_b + 0.4 * torch.randn(40, C, generator=torch.Generator().manual_seed(14)))
    k = 30
    b, t = (_feed(_ready(TopKOverlap, k=k), s, index, labels) for s in (scores_b, scores_t))
    got = b.compare(b, t)[f"overlap@{k}"]
    for c in range(5):
        sets = [sorted((i for i in range(40) if s[i, c] > 0), key=lambda i: (-float(s[i, c]), i))[:k]
                for s in (scores_b, scores_t)]
        common = len(set(sets[0]) & set(sets[1]))
        denom = k if max(map(len, sets)) == k else max(map(len, sets))
        assert got[c].item() == pytest.approx(common / denom * 100, abs=1e-12)


def test_setup_says_when_k_is_larger_than_the_data() -> None:
    ctx = RunContext(has_labels=True, num_classes=5, batch_size=8, num_samples=30, shapes={"l": (C, 4, 4)})
    for cls in (TopKOverlap, ClassConcentration):
        notes = " ".join(_ready(cls, ctx, k=(10, 100, 1000)).setup(ctx))
        assert "k=100 and k=1000 are more than the 30 images" in notes and "at most 30" in notes
        assert "more than" not in " ".join(_ready(cls, ctx, k=(10, 30, "all")).setup(ctx))


def test_concentration_on_short_sets_says_how_many_images_each_histogram_holds() -> None:
    scores, index, labels = _data(15, n=30, shift=-0.3)
    ctx = RunContext(has_labels=True, num_classes=5, batch_size=8, num_samples=30, shapes={"l": (C, 4, 4)})
    base, tuned = (_feed(_ready(ClassConcentration, ctx, k=(5, 100)), scores, index, labels) for _ in range(2))
    res = base.compute()
    used = (scores[:, :5] > 0).sum(dim=0)
    assert res["class_histogram@100"].sum(dim=1)[:5].tolist() == used.double().tolist()
    assert (res["k_used_min@100"], res["k_used_max@100"]) == (int(used.min()), int(used.max()))
    assert "k=100:" in res["note"] and "k_used_min@5" not in res
    cmp = base.compare(base, tuned)
    assert cmp["entropy_mean_change@100"] == 0.0 and "k=100:" in cmp["note"]
