"""``ftprobe demo``: exporting the world, and the whole study on quick settings (slow)."""

from __future__ import annotations

import json

import pytest

from ftprobe.demo.world import OBJECTS, STYLES
from ftprobe.testing.cli import invoke


def _run(capsys, *args: str) -> tuple[int, str, str]:
    return invoke(capsys, *args)


def test_export_data_writes_folders_compare_can_read(capsys, tmp_path):
    code, out, err = _run(capsys, "demo", "--quick", "--export-data", str(tmp_path / "world"))
    assert code == 0, err
    root = tmp_path / "world"
    assert sorted(p.name for p in (root / "photos").iterdir()) == sorted(OBJECTS)
    assert sorted(p.name for p in (root / "styles" / "train").iterdir()) == sorted(STYLES)
    assert len(list((root / "styles" / "test").rglob("*.png"))) == 75
    assert (root / "objects" / "objects.csv").read_text().splitlines()[0] == "path," + ",".join(OBJECTS)
    assert f"styles/test: {root / 'styles' / 'test'}" in out and "ftprobe compare" in err


def test_demo_help_lists_the_options(capsys):
    code, out, _ = _run(capsys, "demo", "--help")
    assert code == 0 and all(opt in out for opt in ("--out", "--quick", "--fresh", "--export-data", "--threads"))


@pytest.mark.slow
def test_quick_demo_writes_results_with_every_metric_and_the_findings(capsys, tmp_path, monkeypatch, chromium):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = _run(capsys, "demo", "--quick", "--out", str(tmp_path / "out"))
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"cka", "weight_l2", "topk_overlap", "class_concentration"} <= set(doc["metrics"])
    assert {v["metric"] for v in doc["values"]} >= {"cka", "weight_l2", "topk_overlap", "class_concentration"}
    assert [tuple(p) for p in doc["pairs"]] == [("pretrained", "mode_a1"), ("mode_a1", "mode_a2"),
                                                ("mode_a1", "mode_b"), ("scratch_init", "scratch"),
                                                ("pretrained", "scratch")]
    demo = doc["run"]["demo"]
    keys = [f["key"] for f in demo["findings"]]
    assert keys == ["cka_depth", "weight_depth", "concentration", "overlap_spread", "double_ft"]
    assert all(f["verdict"] in ("holds", "does not hold here", "could not be measured") for f in demo["findings"])
    assert demo["from_cache"] is False and demo["quick"] is True
    assert len(demo["small_task"]["single"]) == 1 and len(demo["small_task"]["double"]) == 1
    assert "The study's findings, checked on these numbers:" in out
    assert any(line.startswith("[") and "CKA between the pretrained" in line for line in out.splitlines())
    assert (tmp_path / "out" / "summary.txt").read_text().strip().splitlines() == out.strip().splitlines()
    assert (tmp_path / "cache" / "ftprobe" / "demo").is_dir()
    page = chromium.check(tmp_path / "out" / "report.html", tmp_path)  # the report opens with every figure
    assert page["images"] >= 5 and page["broken"] == [] and page["errors"] == [] and page["console"] == []
    from ftprobe.report import validate_results

    validate_results(doc)  # the file follows the results schema, run.demo included
    assert "The study&#x27;s findings in this world" in (tmp_path / "out" / "report.html").read_text()
