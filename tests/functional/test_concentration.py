"""Class histogram, normalised entropy, Gini and dominant class (ftprobe.functional.concentration)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ftprobe.functional.concentration import (
    class_concentration,
    class_histogram,
    dominant_class,
    gini,
    normalized_entropy,
)
from ftprobe.functional.topk import pack_multihot


@pytest.mark.parametrize("num_classes", [2, 5, 25], ids=["C2", "C5", "C25-rasta"])
def test_uniform_and_single_class_extremes(num_classes: int) -> None:
    hist = torch.stack([torch.full((num_classes,), 3.0), torch.eye(num_classes)[1] * 7])
    assert normalized_entropy(hist).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert gini(hist).tolist() == pytest.approx([1 - 1 / num_classes, 0.0], abs=1e-12)


def test_hand_computed_two_to_one_split() -> None:
    # p = (2/3, 1/3, 0) over C = 3 classes
    hist = class_histogram(torch.tensor([[0, 0, 1, -1]]), 3)
    assert hist.tolist() == [[2.0, 1.0, 0.0]]
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3)) / math.log2(3)
    assert normalized_entropy(hist).item() == pytest.approx(h, abs=1e-12)
    assert gini(hist).item() == pytest.approx(2 / 3 * 1 / 3 + 1 / 3 * 2 / 3, abs=1e-12)


def test_single_label_histogram_ignores_missing_and_rejects_out_of_range() -> None:
    labels = torch.tensor([[4, 4, 0, -1, -1], [-1, -1, -1, -1, -1]])
    assert class_histogram(labels, 5).tolist() == [[1.0, 0, 0, 0, 2.0], [0.0] * 5]
    with pytest.raises(ValueError, match="out of range"):
        class_histogram(labels, 4)


def test_multilabel_bitmask_counts_each_label_once() -> None:
    rows = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]])  # 4 images, 3 classes
    bits = pack_multihot(rows)
    labels = torch.stack([bits, torch.tensor([bits[0], -1, -1, -1])])
    hist = class_histogram(labels, 3, multilabel=True)
    assert hist.tolist() == [[2.0, 2.0, 1.0], [1.0, 1.0, 0.0]]
    p = np.array([2, 2, 1]) / 5
    expected = float(-(p * np.log2(p)).sum() / np.log2(3))
    assert class_concentration(labels, 3, multilabel=True)[0].item() == pytest.approx(expected, abs=1e-12)
    assert class_concentration(labels, 3, multilabel=True)[1].item() == pytest.approx(math.log(2) / math.log(3))


def test_dead_channel_gives_nan() -> None:
    hist = torch.zeros(1, 4)
    assert math.isnan(normalized_entropy(hist).item())
    assert math.isnan(gini(hist).item())
    cls, share = dominant_class(hist)
    assert cls.tolist() == [-1] and math.isnan(share.item())


def test_dominant_class_tie_goes_to_smaller_class() -> None:
    cls, share = dominant_class(torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 0.0, 0.0, 0.0]]))
    assert cls.tolist() == [1, 0]
    assert share.tolist() == pytest.approx([3 / 7, 1.0])


def test_entropy_needs_two_classes_and_known_measure() -> None:
    with pytest.raises(ValueError, match="2 classes"):
        normalized_entropy(torch.ones(3, 1))
    with pytest.raises(ValueError, match="measure"):
        class_concentration(torch.zeros(1, 1, dtype=torch.long), 2, measure="variance")  # type: ignore[arg-type]


def test_entropy_matches_numpy_bruteforce_random_case() -> None:
    g = torch.Generator().manual_seed(11)
    num_classes = 7
    labels = torch.randint(0, num_classes, (20, 50), generator=g)
    labels[torch.rand(20, 50, generator=g) < 0.3] = -1
    labels[3] = -1  # one dead channel
    got_h = class_concentration(labels, num_classes).numpy()
    got_g = class_concentration(labels, num_classes, measure="gini").numpy()
    for c, row in enumerate(labels.numpy()):
        counts = np.bincount(row[row >= 0], minlength=num_classes).astype(np.float64)
        if counts.sum() == 0:
            assert np.isnan(got_h[c]) and np.isnan(got_g[c])
            continue
        p = counts / counts.sum()
        nz = p[p > 0]
        assert got_h[c] == pytest.approx(-(nz * np.log2(nz)).sum() / np.log2(num_classes), abs=1e-12)
        assert got_g[c] == pytest.approx((p * (1 - p)).sum(), abs=1e-12)


@st.composite
def _histograms(draw: st.DrawFn) -> torch.Tensor:
    num_classes = draw(st.integers(2, 12))
    row = st.lists(st.integers(0, 50), min_size=num_classes, max_size=num_classes).filter(lambda r: sum(r) > 0)
    return torch.tensor(draw(st.lists(row, min_size=1, max_size=5)), dtype=torch.float64)


@settings(max_examples=100, deadline=None)
@given(_histograms())
def test_entropy_and_gini_stay_in_range(hist: torch.Tensor) -> None:
    h = normalized_entropy(hist)
    gn = gini(hist)
    num_classes = hist.shape[1]
    assert bool(((h >= 0) & (h <= 1 + 1e-12)).all())
    assert bool(((gn >= 0) & (gn <= 1 - 1 / num_classes + 1e-12)).all())
