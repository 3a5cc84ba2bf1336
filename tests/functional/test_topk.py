"""Running top-k with deterministic tie-break, merging of shards, and top-k overlap (ftprobe.functional.topk)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ftprobe.functional.topk import (
    TopK,
    empty_state,
    finalize_topk,
    merge_topk,
    normalize_k,
    pack_multihot,
    running_topk_update,
    state_width,
    topk_overlap,
    topk_prefix,
    topk_sets,
    unpack_bitmask,
)

# ------------------------------------------------------------------------------------------------ helpers


def _case(seed: int, n: int = 60, c: int = 7, levels: int | None = None) -> tuple[torch.Tensor, ...]:
    """Scores (N, C) with negatives and zeros, shuffled unique global indices (N,), labels (N,) in [0, 5)."""
    g = torch.Generator().manual_seed(seed)
    if levels is None:
        scores = torch.randn(n, c, generator=g, dtype=torch.float64)
    else:  # few distinct values: many ties
        scores = torch.randint(-1, levels, (n, c), generator=g).to(torch.float64)
    scores[torch.rand(n, c, generator=g) < 0.2] = 0.0
    index = torch.randperm(3 * n, generator=g)[:n]
    labels = torch.randint(0, 5, (n,), generator=g)
    return scores, index, labels


def _reference(scores: np.ndarray, index: np.ndarray, k: int | str, positive_only: bool) -> list[list[int]]:
    """Brute force: per channel, Python sort by (score desc, index asc) over the eligible images, keep k."""
    out = []
    for c in range(scores.shape[1]):
        items = [(float(scores[i, c]), int(index[i])) for i in range(scores.shape[0])]
        items = [(v, i) for v, i in items if (v > 0 if positive_only else np.isfinite(v))]
        items.sort(key=lambda vi: (-vi[0], vi[1]))
        out.append([i for _, i in (items if k == "all" else items[:k])])
    return out


def _valid_lists(t: TopK) -> list[list[int]]:
    return [[int(i) for i in row if i >= 0] for row in t.index]


def _assert_same(a: TopK, b: TopK) -> None:
    assert torch.equal(a.index, b.index)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.labels, b.labels)


def _stream(scores, index, labels, k, batch: int, order: torch.Tensor | None = None, positive_only: bool = True):
    rows = order if order is not None else torch.arange(scores.shape[0])
    state = empty_state()
    for lo in range(0, rows.numel(), batch):
        r = rows[lo : lo + batch]
        state = running_topk_update(state, scores[r], index[r], labels[r], k, positive_only)
    return state


# ------------------------------------------------------------------------------------------------ top-k sets


@pytest.mark.parametrize("k", [1, 5, 100, "all"], ids=["k1", "k5", "k100-more-than-n", "all"])
@pytest.mark.parametrize("positive_only", [True, False], ids=["positive", "any-finite"])
def test_one_shot_matches_bruteforce(k: int | str, positive_only: bool) -> None:
    scores, index, labels = _case(1)
    t = topk_sets(scores, index, k, positive_only, labels)
    assert _valid_lists(t) == _reference(scores.numpy(), index.numpy(), k, positive_only)
    lab_of = dict(zip(index.tolist(), labels.tolist()))
    for row_i, row_l, row_v in zip(t.index.tolist(), t.labels.tolist(), t.values.tolist()):
        assert all(lab == (lab_of[i] if i >= 0 else -1) for i, lab in zip(row_i, row_l))
        assert all((v == float("-inf")) == (i < 0) for i, v in zip(row_i, row_v))


@pytest.mark.parametrize("k", [3, 40, (2, 7, 40), "all"], ids=["k3", "k40-compacts", "several", "all"])
@pytest.mark.parametrize("batch", [1, 8, 13], ids=["b1", "b8", "b13-ragged"])
def test_stream_equals_one_shot_equals_shards(k, batch: int) -> None:
    scores, index, labels = _case(2, n=150, levels=6)
    whole = topk_sets(scores, index, k, labels=labels)
    seq = finalize_topk(_stream(scores, index, labels, k, batch), k)
    shuffled = finalize_topk(_stream(scores, index, labels, k, batch, torch.randperm(150)), k)
    shards = [_stream(scores[s], index[s], labels[s], k, batch) for s in (slice(0, 37), slice(37, 90), slice(90, 150))]
    merged_lr = finalize_topk(merge_topk(merge_topk(shards[0], shards[1], k), shards[2], k), k)
    merged_rl = finalize_topk(merge_topk(shards[2], merge_topk(shards[1], shards[0], k), k), k)
    for other in (seq, shuffled, merged_lr, merged_rl):
        _assert_same(whole, other)


def test_compaction_bounds_state_without_changing_result() -> None:
    scores, index, labels = _case(3, n=400)
    state = empty_state()
    widths = []
    for lo in range(0, 400, 16):
        previous, previous_width = state, state_width(state)
        state = running_topk_update(state, scores[lo : lo + 16], index[lo : lo + 16], labels[lo : lo + 16], 10, True)
        assert state_width(previous) == previous_width  # the old state is not modified
        widths.append(state_width(state))
    assert max(widths) <= 10 + 128 + 16
    _assert_same(finalize_topk(state, 10), topk_sets(scores, index, 10, labels=labels))


def test_many_equal_scores_tie_break_by_smaller_index() -> None:
    scores = torch.ones(50, 2, dtype=torch.float64)
    scores[:, 1] = 0.0
    index = torch.randperm(50, generator=torch.Generator().manual_seed(4)) + 1000
    labels = index % 3
    t = topk_sets(scores, index, k=5, labels=labels)
    assert t.index[0].tolist() == [1000, 1001, 1002, 1003, 1004]
    assert t.labels[0].tolist() == [1, 2, 0, 1, 2]
    assert t.index[1].tolist() == [-1] * 5  # zeros are not positive
    order = torch.randperm(50, generator=torch.Generator().manual_seed(5))
    _assert_same(t, finalize_topk(_stream(scores, index, labels, 5, 7, order), 5))


def test_positive_only_drops_nonpositive_and_never_nan() -> None:
    scores = torch.tensor([[-1.0], [0.0], [2.0], [float("nan")], [-0.0], [float("-inf")], [0.5]])
    index = torch.arange(7)
    assert topk_sets(scores, index, k=10).index[0, :3].tolist() == [2, 6, -1]
    assert topk_sets(scores, index, k="all").index.tolist() == [[2, 6]]
    assert topk_sets(scores, index, k=10, positive_only=False).index[0, :6].tolist() == [2, 6, 1, 4, 0, -1]


def test_several_k_are_prefixes() -> None:
    scores, index, labels = _case(6)
    t = topk_sets(scores, index, (4, 9), labels=labels)
    _assert_same(topk_prefix(t, 4), topk_sets(scores, index, 4, labels=labels))
    compacted = merge_topk(_stream(scores, index, labels, 9, 5), empty_state(), 9)  # one canonical chunk
    _assert_same(finalize_topk(compacted, 4), topk_sets(scores, index, 4, labels=labels))
    assert t.index.shape[1] == 9


def test_all_keeps_every_positive_image() -> None:
    scores, index, _ = _case(7)
    t = topk_sets(scores, index, "all")
    assert (t.index >= 0).sum(dim=1).tolist() == (scores > 0).sum(dim=0).tolist()
    assert t.index.shape[1] == int((scores > 0).sum(dim=0).max())


def test_normalize_k() -> None:
    assert normalize_k(100) == (100,)
    assert normalize_k(["all", 1000, 100, 100]) == (100, 1000, "all")
    assert normalize_k("1000, 100,all") == (100, 1000, "all")
    for bad in (0, -3, "some", "0", [], True, 2.5, [10, None]):
        with pytest.raises(ValueError, match="k"):
            normalize_k(bad)


def test_multihot_bitmask_round_trip() -> None:
    rows = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    bits = pack_multihot(rows)
    assert bits.tolist() == [5, 0, 15]
    assert torch.equal(unpack_bitmask(bits, 4), rows.bool())
    assert not unpack_bitmask(torch.tensor([-1]), 4).any()
    wide = torch.zeros(2, 63, dtype=torch.long)
    wide[0, 62] = 1
    assert pack_multihot(wide).tolist() == [1 << 62, 0]
    with pytest.raises(ValueError, match="63"):
        pack_multihot(torch.zeros(2, 64))


def test_state_round_trip_weights_only() -> None:
    scores, index, labels = _case(8)
    state = _stream(scores, index, labels, 5, 16)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    _assert_same(finalize_topk(loaded, 5), finalize_topk(state, 5))


def test_channel_mismatch_refused() -> None:
    a = running_topk_update(empty_state(), torch.ones(2, 3), torch.arange(2), None, 4)
    with pytest.raises(ValueError, match="channel"):
        running_topk_update(a, torch.ones(2, 4), torch.arange(2, 4), None, 4)


# ------------------------------------------------------------------------------------------------ overlap


def test_overlap_hand_example_k2() -> None:
    base = torch.tensor([[10, 11, 12], [20, 21, -1], [30, -1, -1], [-1, -1, -1]])
    tuned = torch.tensor([[11, 10, 13], [21, 29, -1], [30, -1, -1], [-1, -1, -1]])
    # k=2: {10,11}∩{11,10}=2 → 100; {20,21}∩{21,29}=1 → 50; one image each, the same → 1/1 → 100 (both sets are
    # smaller than k: divided by the larger set); no image in either → undefined (NaN), never 0
    got = topk_overlap(base, tuned, 2)
    assert got[:3].tolist() == [100.0, 50.0, 100.0] and torch.isnan(got[3])
    got = topk_overlap(base, tuned, 3)
    assert got[:3].tolist() == pytest.approx([200 / 3, 50.0, 100.0]) and torch.isnan(got[3])


def test_overlap_all_divides_by_larger_set() -> None:
    base = torch.tensor([[1, 2, 3, 4], [5, -1, -1, -1], [-1, -1, -1, -1]])
    tuned = torch.tensor([[2, 4, -1, -1], [5, -1, -1, -1], [-1, -1, -1, -1]])
    got = topk_overlap(base, tuned, "all")
    assert got[:2].tolist() == [50.0, 100.0] and torch.isnan(got[2])


@pytest.mark.parametrize("k", [1, 5, 29, 30, 31, 100, 1000, "all"])
def test_overlap_of_a_set_with_itself_is_100_at_every_k(k: int | str) -> None:
    # 30 images, 7 channels with 0 to 30 positive images (some far fewer than k): a model against itself is 100
    scores, index, _ = _case(9, n=30)
    scores[:, 6] = 0.0  # a channel with no positive image
    t = topk_sets(scores, index, k)
    ov = topk_overlap(t.index, t.index, k)
    assert ov[:6].tolist() == [100.0] * 6 and torch.isnan(ov[6])


def test_overlap_divides_by_the_larger_set_only_when_both_are_shorter_than_k() -> None:
    # channel 0: base has k=4 images, tuned 2 (both in base's set): the study's rule |∩| / k
    # channel 1: both have fewer than k (3 and 2, 2 shared): divided by the larger real set, 3
    base = torch.tensor([[1, 2, 3, 4], [5, 6, 7, -1]])
    tuned = torch.tensor([[2, 3, -1, -1], [6, 7, -1, -1]])
    assert topk_overlap(base, tuned, 4).tolist() == pytest.approx([50.0, 200 / 3])
    assert topk_overlap(base, tuned, 4).tolist() == topk_overlap(tuned, base, 4).tolist()


@pytest.mark.parametrize("k", [1, 10, 25, "all"], ids=["k1", "k10", "k25", "all"])
def test_overlap_matches_numpy_bruteforce(k: int | str) -> None:
    g = torch.Generator().manual_seed(10)
    base = torch.randn(80, 9, generator=g, dtype=torch.float64)
    tuned = base + 0.7 * torch.randn(80, 9, generator=g, dtype=torch.float64)
    index = torch.randperm(80, generator=g)
    ta, tb = topk_sets(base, index, k), topk_sets(tuned, index, k)
    ra, rb = _reference(base.numpy(), index.numpy(), k, True), _reference(tuned.numpy(), index.numpy(), k, True)
    expected = []
    for sa, sb in zip(ra, rb):
        denom = max(len(sa), len(sb))  # each set holds at most k images: k whenever either model has k positives
        expected.append(np.nan if denom == 0 else len(set(sa) & set(sb)) / denom * 100)
    np.testing.assert_allclose(topk_overlap(ta.index, tb.index, k).numpy(), np.array(expected), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------ properties


@st.composite
def _states(draw: st.DrawFn) -> tuple[list, int]:
    k = draw(st.integers(1, 6))
    n = draw(st.integers(1, 30))
    vals = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0]), min_size=2 * n, max_size=2 * n))
    scores = torch.tensor(vals, dtype=torch.float64).reshape(n, 2)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
    parts = [slice(0, cuts[0]), slice(cuts[0], cuts[1]), slice(cuts[1], n)]
    shards = [running_topk_update(empty_state(), scores[p], index[p], None, k) for p in parts]
    return shards, k, topk_sets(scores, index, k)


@settings(max_examples=60, deadline=None)
@given(_states())
def test_merge_is_associative_and_order_independent(case) -> None:
    (a, b, c), k, whole = case
    left = finalize_topk(merge_topk(merge_topk(a, b, k), c, k), k)
    right = finalize_topk(merge_topk(a, merge_topk(b, c, k), k), k)
    swapped = finalize_topk(merge_topk(merge_topk(c, a, k), b, k), k)
    for other in (right, swapped, whole):
        _assert_same(left, other)


@pytest.mark.parametrize("k", [1, 7, 20, 59, 100])
def test_ties_never_split_identical_models(k: int) -> None:
    # two scores only (many ties at the k-th place) and each "model" streamed in other batches and orders: the total
    # order (score, then sample index) gives both the same set, so overlap is exactly 100 where a set exists
    scores, index, labels = _case(21, n=60, levels=2)
    a = finalize_topk(_stream(scores, index, labels, k, batch=7), k)
    order = torch.randperm(60, generator=torch.Generator().manual_seed(22))
    b = finalize_topk(_stream(scores, index, labels, k, batch=13, order=order), k)
    _assert_same(a, b)
    ov = topk_overlap(a.index, b.index, k)
    alive = (a.index >= 0).any(dim=1)
    assert ov[alive].tolist() == [100.0] * int(alive.sum()) and bool(ov[~alive].isnan().all())
