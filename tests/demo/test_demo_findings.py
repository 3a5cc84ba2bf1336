"""Findings are computed from the numbers, both ways: a trend in the data holds, its reverse does not."""

from __future__ import annotations

import math

import pytest

from ftprobe.core.results import Result, Value
from ftprobe.demo.findings import double_finding, figure_lines, findings_html, study_findings
from ftprobe.demo.study import finite_json, keep_pairs

LAYERS = ["l0", "l1", "l2", "l3"]


def _result(cka, rel, ent_tuned, ent_base, overlaps):
    values = []
    for i, layer in enumerate(LAYERS):
        values.append(Value("cka", layer, "pair", base="pre", tuned="ft", scalars={"cka": cka[i]}))
        values.append(Value("weight_l2", layer, "pair", base="pre", tuned="ft", scalars={"relative": rel[i]}))
        values.append(Value("topk_overlap", layer, "pair", base="pre", tuned="ft",
                            scalars={"overlap_mean@5": sum(overlaps) / len(overlaps)}, arrays={"overlap@5": overlaps}))
        for model, ent in (("ft", ent_tuned), ("pre", ent_base)):
            values.append(Value("class_concentration", layer, "model", model=model,
                                scalars={"entropy_mean@5": ent[i]}, arrays={"entropy@5": [0.5] * len(overlaps)}))
        values.append(Value("cka", layer, "pair", base="pre", tuned="other", scalars={"cka": 0.5}))
    return Result(models=[{"label": "pre"}, {"label": "ft"}, {"label": "other"}],
                  pairs=[("pre", "ft"), ("pre", "other")], values=values)


def _by_key(found):
    return {f.key: f for f in found}


def test_study_trends_hold():
    r = _result(cka=[0.99, 0.9, 0.7, 0.4], rel=[0.01, 0.02, 0.05, 0.1], ent_tuned=[0.9, 0.8, 0.6, 0.4],
                ent_base=[0.9, 0.85, 0.8, 0.8], overlaps=[100.0, 80.0, 10.0, 0.0])
    f = _by_key(study_findings(r, base="pre", tuned="ft", layers=LAYERS, k=5))
    assert all(f[k].holds is True for k in ("cka_depth", "weight_depth", "concentration", "overlap_spread"))
    assert all(f[k].reason == "" and "Why:" not in f[k].line() for k in f)
    assert f["cka_depth"].stats["spearman"] == pytest.approx(-1.0)
    assert "holds" in f["cka_depth"].line() and "-1.00" in f["cka_depth"].line()


def test_reversed_trends_do_not_hold():
    r = _result(cka=[0.4, 0.7, 0.9, 0.99], rel=[0.1, 0.05, 0.02, 0.01], ent_tuned=[0.4, 0.6, 0.8, 0.9],
                ent_base=[0.5, 0.5, 0.5, 0.5], overlaps=[100.0, 90.0, 95.0, 100.0])
    f = _by_key(study_findings(r, base="pre", tuned="ft", layers=LAYERS, k=5))
    assert all(f[k].holds is False for k in ("cka_depth", "weight_depth", "concentration", "overlap_spread"))
    assert f["cka_depth"].verdict == "does not hold here"
    # each says why in one line, from the numbers: where the trend breaks, which share is missing
    assert f["cka_depth"].reason.startswith("the lowest CKA is at l0 (0.40), in the lower half")
    assert f["weight_depth"].reason.startswith("the largest relative L2 change ‖ΔW‖/‖W‖ is at l0 (0.100), in the lower")
    assert "does not fall with depth (ρ = +1.00)" in f["concentration"].reason
    assert "no more concentrated than the pretrained model's (0.50)" in f["concentration"].reason
    assert f["overlap_spread"].reason.startswith("only 0% of the channels got new top images")
    assert all("Why: " + f[k].reason in f[k].line() and "\n" not in f[k].reason for k in f)
    assert all(f[k].to_dict()["reason"] == f[k].reason for k in f)


def test_unmeasurable_findings_say_so():
    r = _result(cka=[math.nan] * 4, rel=[0.1, math.nan, math.nan, math.nan], ent_tuned=[0.5] * 4,
                ent_base=[0.5] * 4, overlaps=[50.0])
    f = _by_key(study_findings(r, base="pre", tuned="ft", layers=LAYERS, k=7))  # no values at k=7
    assert f["cka_depth"].holds is None and f["weight_depth"].holds is None
    assert f["concentration"].holds is None and f["overlap_spread"].holds is None
    assert f["cka_depth"].verdict == "could not be measured"


@pytest.mark.parametrize(("single", "double", "holds"), [([40.0, 42.0], [45.0, 47.0], True),
                                                       ([45.0], [38.0], False)], ids=["better", "worse"])
def test_double_fine_tuning_verdict(single, double, holds):
    f = double_finding(single, double, "mAP", "objects")
    assert f.holds is holds and f.stats["single"] == single
    assert f"single {sum(single) / len(single):.1f}" in f.detail
    assert (f.reason == "") is holds
    if not holds:
        assert f.reason.startswith("starting from the model fine-tuned on the medium task scored 7.0 mAP points lower")


def test_keep_pairs_drops_other_pairs_only():
    r = _result(cka=[0.9] * 4, rel=[0.1] * 4, ent_tuned=[0.5] * 4, ent_base=[0.5] * 4, overlaps=[50.0])
    kept = keep_pairs(r, [("pre", "ft")])
    assert kept.pairs == [("pre", "ft")]
    assert not any(v.tuned == "other" for v in kept.values)
    assert sum(v.scope == "model" for v in kept.values) == sum(v.scope == "model" for v in r.values)
    with pytest.raises(KeyError):
        keep_pairs(r, [("ft", "pre")])


def test_figure_lines_html_and_json_safety():
    r = _result(cka=[0.99, 0.9, 0.7, 0.4], rel=[0.01, 0.02, 0.05, 0.1], ent_tuned=[0.5] * 4, ent_base=[0.5] * 4,
                overlaps=[50.0])
    lines = figure_lines(r, [("pre", "ft")], LAYERS, 5)
    assert lines[0] == "CKA: pre→ft 0.99 at l0 → 0.40 at l3."
    found = study_findings(r, base="pre", tuned="ft", layers=LAYERS, k=5)
    html = findings_html(found, {"model <b>": {"top1": 50.0, "n": 3.0}})
    assert "&lt;b&gt;" in html and "<b>holds</b>" in html and "50.0" in html
    assert "<th>why not</th>" in html
    reversed_ = study_findings(_result(cka=[0.4, 0.7, 0.9, 0.99], rel=[0.1] * 4, ent_tuned=[0.5] * 4,
                                       ent_base=[0.5] * 4, overlaps=[50.0]), base="pre", tuned="ft", layers=LAYERS, k=5)
    assert "the lowest CKA is at l0" in findings_html(reversed_)
    assert finite_json({"a": [math.nan, 1.0], "b": math.inf}) == {"a": [None, 1.0], "b": None}


def test_write_outputs_falls_back_to_results_json_without_the_report_package(tmp_path, monkeypatch):
    import importlib.util

    from ftprobe.demo import study

    real = importlib.util.find_spec
    monkeypatch.setattr(study.importlib.util, "find_spec",
                        lambda name: None if name == "ftprobe.report" else real(name))
    r = _result(cka=[0.9] * 4, rel=[0.1] * 4, ent_tuned=[0.5] * 4, ent_base=[0.5] * 4, overlaps=[50.0])
    path = study.write_outputs(r, tmp_path / "out", ["first line", "second line"])
    assert path == tmp_path / "out" / "results.json" and Result.load(path).pairs == r.pairs
    assert (tmp_path / "out" / "summary.txt").read_text() == "first line\nsecond line\n"
