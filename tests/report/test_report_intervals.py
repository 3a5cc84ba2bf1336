"""Intervals and controls (results.json version 2) in the report: values with their intervals in the tables, the
method and level in words, bands in the per-layer line figures, the controls labelled as controls, "within noise" in
the headline when the interval of a difference covers zero; and nothing of it when a run made no intervals."""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from ftprobe.core.results import Result, Value
from ftprobe.report import write_report
from ftprobe.report._access import fmt
from ftprobe.report.headline import headline_sentences

LAYERS = ("conv1", "conv3", "conv5")
GROUPS = 4
RESAMPLING = {"method": "jackknife", "groups": GROUPS, "level": 0.95, "seed": 0, "unit": "sample",
              "units": {"cka": "sample"}, "groups_used": GROUPS}


def _iv(x: float, spread: float, shift: float = 0.0) -> dict:
    """An interval of ``x`` whose leave-one-group-out replicates scatter by ``spread`` (``shift`` moves them all:
    replicates of two values with the same spread and shift cancel in a paired difference)."""
    reps = [x + shift + spread * d for d in (-1.0, -0.3, 0.4, 0.9)]
    return {"lo": x - 3 * spread, "hi": x + 3 * spread, "se": spread, "bias": 0.0, "replicates": reps}


def _result(cka: dict[str, float], spread: float = 0.01, metric: str = "cka", declared: dict | None = None,
            intervals: bool = True) -> Result:
    pairs = [("base", "ft1"), ("base", "random_init"), ("ft1", "ft2")]
    offsets = {("base", "ft1"): 0.0, ("base", "random_init"): -0.5, ("ft1", "ft2"): 0.05}
    values = []
    for b, t in pairs:
        for n in LAYERS:
            x = min(1.0, cka[n] + offsets[(b, t)]) if (b, t) != ("ft1", "ft2") else 0.97
            scalars = {metric: x, f"{metric}_shuffled": 0.02 + 0.001 * LAYERS.index(n), "n": 40.0}
            ivs = {metric: _iv(x, spread)} if intervals else {}
            values.append(Value(metric, n, "pair", base=b, tuned=t, scalars=scalars, intervals=ivs))
    meta = {"provider": "ftprobe", "options": {}, "needs": "activations"}
    if declared is not None:
        meta["declared"] = declared
    return Result(models=[{"label": m} for m in ("base", "ft1", "ft2", "random_init")], pairs=pairs,
                  layers=[{"spec": n, "name": n, "alias": False} for n in LAYERS], metrics={metric: meta},
                  values=values, run={"versions": {"ftprobe": "test"}},
                  resampling=RESAMPLING if intervals else None,
                  controls={"random_init": "random_init", "seed_pairs": [["ft1", "ft2"]]})


def _page(res: Result, tmp_path) -> str:
    return write_report(res, tmp_path / "report").read_text(encoding="utf-8")


def test_tables_show_each_value_with_its_interval_and_the_method_in_words(tmp_path) -> None:
    res = _result({"conv1": 0.98, "conv3": 0.7, "conv5": 0.41})
    page = _page(res, tmp_path)
    v = next(v for v in res.values if v.layer == "conv5" and v.tuned == "ft1")
    assert "<td class=\"n\">0.41000 [0.38000, 0.44000]</td>" in page
    assert "Intervals: 95 % delete-one-group jackknife over 4 groups of images." in page
    assert v.intervals["cka"]["lo"] == pytest.approx(0.38)


def test_controls_are_labelled_beside_the_value(tmp_path) -> None:
    page = _page(_result({"conv1": 0.98, "conv3": 0.7, "conv5": 0.41}), tmp_path)
    table = re.search(r"beside its controls.*?<table>(.*?)</table>", page, re.S)
    assert table, "a controls table"
    heads = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table.group(1))]
    assert heads == ["layer", "CKA, base → ft1", "control: chance level, images paired at random (cka_shuffled), "
                     "base → ft1", "control: random init (random_init): CKA, base → random_init",
                     "control: seed-to-seed noise floor: CKA, ft1 → ft2"]
    rows = re.findall(r"<tr>(<td>.*?)</tr>", table.group(1))
    assert len(rows) == len(LAYERS) and "0.02000" in rows[0] and "0.97000 [0.94000, 1]" in rows[0]
    # the per-layer table names the control pairs as controls too
    assert html.escape("ft1 → ft2 (control: seed-to-seed noise floor)") in page


def test_the_headline_says_within_noise_when_the_difference_covers_zero(tmp_path) -> None:
    wide = _result({"conv1": 0.5, "conv3": 0.49, "conv5": 0.48}, spread=0.01)
    # replicates made by _iv move together at every layer, so a paired difference has no spread: give conv1 and
    # conv5 noise that goes opposite ways, wide against their difference of 0.02
    for v in wide.values:
        if v.tuned == "ft1":
            k = v.layer == "conv5"  # conv5 noise goes the other way from conv1 noise
            v.intervals["cka"]["replicates"] = [x + (0.05 if (i + k) % 2 else -0.05)
                                                for i, x in enumerate(v.intervals["cka"]["replicates"])]
    line = headline_sentences(wide)[0]
    assert line.startswith("CKA between base and ft1 falls to 0.48 [0.45, 0.51] at conv5 (from 0.5 at conv1).")
    assert line.endswith("The difference between the two layers, -0.02 [-0.571, 0.531], is within noise.")
    assert not any("random_init" in x or "ft2" in x for x in headline_sentences(wide)), "controls are no headline"
    clear = _result({"conv1": 0.98, "conv3": 0.7, "conv5": 0.41}, spread=0.001)
    line = headline_sentences(clear)[0]
    assert "falls to 0.41 [0.407, 0.413] at conv5" in line and "within noise" not in line
    assert f"<li>{html.escape(line)}</li>" in _page(clear, tmp_path)


def test_the_line_figure_shades_the_intervals(drawn, tmp_path) -> None:
    declared = {"higher_is_more_similar": True, "title": "Made-up alignment", "headline": ["align"],
                "value_names": {"align": "alignment"}}
    res = _result({"conv1": 0.98, "conv3": 0.7, "conv5": 0.41}, metric="align", declared=declared)
    page = _page(res, tmp_path)
    fig = drawn["align_1.png"]
    (ax,) = fig.axes
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(res.pairs)
    ys = bands[0].get_paths()[0].vertices[:, 1]
    lo = [v.intervals["align"]["lo"] for v in res.values if v.tuned == "ft1"]
    hi = [v.intervals["align"]["hi"] for v in res.values if v.tuned == "ft1"]
    assert np.allclose(sorted(set(np.round(ys, 6))), sorted(set(np.round(lo + hi, 6))))
    assert "shaded: 95 % interval" in page


def test_without_intervals_nothing_changes(drawn, tmp_path) -> None:
    declared = {"higher_is_more_similar": True, "title": "Made-up alignment", "headline": ["align"],
                "value_names": {"align": "alignment"}}
    res = _result({"conv1": 0.98, "conv3": 0.7, "conv5": 0.41}, metric="align", declared=declared, intervals=False)
    page = _page(dataclasses.replace(res, schema_version=1), tmp_path)
    assert "Intervals:" not in page and "shaded" not in page and "[" not in re.sub(r"<style>.*?</style>", "", page,
                                                                                   flags=re.S).split("<main>")[1]
    assert not [c for c in drawn["align_1.png"].axes[0].collections if isinstance(c, PolyCollection)]
    assert "within noise" not in " ".join(headline_sentences(res))


def test_the_headline_compares_two_fine_tunes_at_the_layer_it_names() -> None:
    res = _result({"conv1": 0.98, "conv3": 0.7, "conv5": 0.41})
    extra = [Value("cka", n, "pair", base="base", tuned="ft2", scalars={"cka": x + 0.05},
                   intervals={"cka": _iv(x + 0.05, 0.01)}) for n, x in zip(LAYERS, (0.93, 0.7, 0.41))]
    res = dataclasses.replace(res, pairs=[*res.pairs, ("base", "ft2")], values=[*res.values, *extra])
    lines = headline_sentences(res)
    # the replicates of the two move together (same groups of images): the paired difference has no spread
    assert lines[1] == ("At conv5, CKA between base and ft1 (0.41) and between base and ft2 (0.46) differ by -0.05 "
                        "[-0.05, -0.05].")
    for v in extra:  # ft2 with noise of its own: the difference is within noise
        v.intervals["cka"]["replicates"] = [x + (0.1 if i % 2 else -0.1)
                                            for i, x in enumerate(v.intervals["cka"]["replicates"])]
    assert headline_sentences(res)[1].endswith(", within noise.")


def test_a_run_with_intervals_and_a_seed_pair_renders_them(hostile_images, tmp_path) -> None:
    """The real thing on tiny models: ftprobe.compare(intervals=True, seed_pairs=...)."""
    import ftprobe
    from ftprobe.testing import TinyNet, perturbed_copy

    base = TinyNet(num_classes=3, seed=0)
    ft1, ft2 = perturbed_copy(base, noise=0.3, seed=1), perturbed_copy(base, noise=0.3, seed=2)
    res = ftprobe.compare(base, ft1, ft2, labels=["base", "ft1", "ft2"], layers=["conv2d0", "mixed5b"],
                          data=hostile_images, metrics={"cka": {}}, size=32, batch_size=5, device="cpu",
                          intervals=True, interval_groups=5, seed_pairs=[("ft1", "ft2")])
    assert res.resampling and res.controls["seed_pairs"] == [["ft1", "ft2"]]
    page = _page(res, tmp_path)
    v = next(v for v in res.values if v.layer == "mixed5b" and (v.base, v.tuned) == ("base", "ft1"))
    lo, hi = v.interval("cka")
    assert f"{fmt(v.scalars['cka'])} [{fmt(lo)}, {fmt(hi)}]" in page and lo < v.scalars["cka"] < hi
    assert "95 % delete-one-group jackknife over 5 groups of images" in page
    assert "control: seed-to-seed noise floor" in page and "control: chance level" in page
    assert html.escape("CKA between base and ft1 ") in page
