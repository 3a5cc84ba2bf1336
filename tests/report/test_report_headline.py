"""The report reads top-down: a headline of what changed most (from what metrics declare, never their names), the
stored findings one line each, then the figures, then the details (tables, collapsed lists), nothing lost."""

from __future__ import annotations

import ast
import dataclasses
import html
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ftprobe
from ftprobe.core.registry import metric_specs
from ftprobe.core.results import Result, Value
from ftprobe.report import write_report
from ftprobe.report._access import fmt
from ftprobe.report.headline import MAX_SENTENCES, MIN_SENTENCES, headline_sentences

HEADLINE_RGB = (0xFF, 0xF4, 0xCC)  # section.headline's background in report.html
FIGURE_BORDER_RGB = (0xC9, 0xD3, 0xE3)  # the border of every figure's image

FINDINGS = [  # as ftprobe demo stores them (Finding.to_dict)
    {"key": "cka_depth", "claim": "CKA between the pretrained and the fine-tuned model falls with depth.",
     "holds": True, "verdict": "holds", "test": "Spearman", "detail": "(CKA 0.98 at a → 0.41 at c)", "stats": {},
     "reason": ""},
    {"key": "double_ft", "claim": "A double fine-tuning beats a single one on the small task.", "holds": False,
     "verdict": "does not hold here", "test": "mean mAP", "detail": "(mAP: single 26.5, double 25.8)", "stats": {},
     "reason": "starting from the medium task scored 0.7 mAP points lower."},
    {"key": "concentration", "claim": "The higher layers concentrate classes.", "holds": None,
     "verdict": "could not be measured", "test": "", "detail": "(entropies not available)", "stats": {},
     "reason": "no class-concentration entropies."},
]
DEMO_LINES = ["The study in a small generated world: a CNN pretrained on scenes is fine-tuned on paintings.",
              "Accuracy (top-1 %): base 80.0; <i>tuned</i> 90.0.",
              "CKA: base→<i>tuned</i> 0.98 at conv2d0 → 0.41 at mixed5b.",
              "The study's findings, checked on these numbers:",
              *(f"[{f['verdict']}] {f['claim']} {f['detail']}" for f in FINDINGS),
              "1 of 3 findings hold in this small world."]


@pytest.fixture(scope="module")
def demo_like(report_result: Result, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report fixture's run written as the demo writes its report: findings in the run, many summary lines."""
    res = dataclasses.replace(report_result, run={**report_result.run, "demo": {"findings": FINDINGS}})
    return write_report(res, tmp_path_factory.mktemp("demo_like"), summary_lines=DEMO_LINES)


def _section(page: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}"[^>]*>(.*?)</section>', page, re.S)
    assert m, anchor
    return m.group(1)


# -- what the headline says -------------------------------------------------------------------------------------------

def test_the_headline_has_a_few_sentences_each_with_a_layer_and_a_number(report_result: Result, names) -> None:
    lines = headline_sentences(report_result)
    assert MIN_SENTENCES <= len(lines) <= MAX_SENTENCES, lines
    base, tuned = names.models[:2]
    for line in lines:
        assert any(f" at {layer}" in line for layer in names.layers), line
        assert re.search(r"\d\.\d", line), line
        assert line.endswith(".")
    assert all(f"between {base} and {tuned}" in line for line in lines), "the first pair: the comparison asked for"
    assert len({line.split(" between ")[0] for line in lines}) == len(lines), "one sentence per metric"


def test_the_headline_gives_the_number_at_the_layer_it_names(report_result: Result, names) -> None:
    """CKA's sentence names its lowest layer and that layer's value, and the highest for contrast."""
    base, tuned = names.models[:2]
    cka = {v.layer: v.scalars["cka"] for v in report_result.select("cka", subject=f"{base} → {tuned}")
           if v.layer != "*"}
    lo, hi = min(cka, key=cka.get), max(cka, key=cka.get)
    line = next(x for x in headline_sentences(report_result) if x.startswith("CKA "))
    assert f"{cka[lo]:.3g} at {lo}" in line and f"{cka[hi]:.3g} at {hi}" in line, line


def _made_up(direction: bool | None, values: dict[str, float], units: str = "") -> Result:
    declared = {"higher_is_more_similar": direction, "title": "Made-up alignment", "headline": ["align@*"],
                "value_names": {"align@*": "alignment at scale {}"}, "units": units}
    layers = list(values)
    vals = [Value("made_up", n, "pair", base="a", tuned="b", scalars={"align@2": x, "align@4": 2 * x})
            for n, x in values.items()]
    return Result(models=[{"label": "a"}, {"label": "b"}], pairs=[("a", "b")],
                  layers=[{"spec": n, "name": n, "alias": False} for n in layers],
                  metrics={"made_up": {"provider": "x", "options": {}, "needs": "activations", "declared": declared}},
                  values=vals)


@pytest.mark.parametrize(("direction", "units", "expect"), [
    (True, "", "Alignment at scale 2 between a and b falls to 0.25 at l3 (from 0.9 at l1)."),
    (False, "%", "The alignment at scale 2 between a and b is largest at l1 (90 %; smallest: 25 % at l3)."),
    (False, "relative", "The alignment at scale 2 between a and b is largest at l1 (9e+03 %; smallest: "
                        "2.5e+03 % at l3)."),
])
def test_a_plugin_metric_that_declares_a_direction_gets_a_headline_sentence(direction, units, expect) -> None:
    res = _made_up(direction, {"l1": 90.0 if units else 0.9, "l2": 50.0 if units else 0.5,
                               "l3": 25.0 if units else 0.25}, units)
    assert headline_sentences(res) == [expect]


def test_a_metric_without_direction_has_no_headline_sentence() -> None:
    assert headline_sentences(_made_up(None, {"l1": 0.9, "l2": 0.5})) == []


def test_the_headline_module_names_no_metric() -> None:
    """No string literal of the headline module is a metric's name: it reads only what metrics declare."""
    names = set(metric_specs())
    assert {"cka", "weight_l2", "topk_overlap", "class_concentration"} <= names  # the registry's exact names
    src = Path(ftprobe.__file__).parent / "report" / "headline.py"
    consts = [(c.lineno, c.value) for c in ast.walk(ast.parse(src.read_text(encoding="utf-8")))
              if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    assert consts, "the check reads the module's string constants"
    named = [(line, s) for line, s in consts if s.strip() in names or any(
        re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", s) for n in names)]
    assert not named, f"metric names in ftprobe/report/headline.py: {named}"


def test_the_name_check_would_see_a_metric_name() -> None:
    code = 'X = "weight_l2"\nif m == "cka":\n    pass\n'
    consts = [c.value for c in ast.walk(ast.parse(code)) if isinstance(c, ast.Constant)]
    assert set(consts) & set(metric_specs()) == {"weight_l2", "cka"}


# -- the page, top-down ------------------------------------------------------------------------------------------------

def test_the_page_opens_with_the_headline_then_findings_then_figures_then_details(demo_like: Path) -> None:
    page = demo_like.read_text(encoding="utf-8")
    head = _section(page, "headline")
    assert page.index('<section id="headline"') < page.index("<figure") < page.index('<section id="summary"')
    for line in headline_sentences(ftprobe.Result.load(demo_like.parent / "results.json")):
        assert f"<li>{html.escape(line)}</li>" in head
    # the findings: one line each, the verdict, and why for one that does not hold
    items = re.findall(r'<ul class="findings">(.*?)</ul>', head, re.S)
    assert len(items) == 1 and items[0].count("<li>") == len(FINDINGS)
    assert '<span class="verdict fails">does not hold here</span>' in items[0]
    assert html.escape(FINDINGS[1]["reason"]) in items[0] and html.escape(FINDINGS[2]["reason"]) in items[0]
    assert html.escape(FINDINGS[0]["claim"]) in items[0] and "1 of 3 hold" in head
    # the run's own many lines: collapsed, none lost, still escaped
    assert re.search(r"<details><summary>The run.s own summary \(8 sentences\)</summary>", head)
    for line in DEMO_LINES:
        assert html.escape(line) in head and html.escape(line) in _section(page, "summary")


def test_no_value_is_lost_and_headline_values_are_tables_per_layer(report_result: Result, demo_like: Path,
                                                                    names) -> None:
    page = demo_like.read_text(encoding="utf-8")
    for v in report_result.values:  # every scalar of every layer is in a table cell
        for x in v.scalars.values():
            assert f">{html.escape(fmt(x))}</td>" in page, (v.metric, v.layer, x)
    cka = _section(page, "metric-1")
    assert cka.index("<figure") < cka.index("<table") < cka.index("<details>")  # figure, table, then the long one
    table = re.search(r"<table>(.*?)</table>", cka, re.S).group(1)
    heads = re.findall(r"<th>(.*?)</th>", table)
    assert heads == ["layer", *(html.escape(f"{b} → {t}") for b, t in report_result.pairs)]
    assert [re.sub("<.*?>", "", r).split("0.")[0] for r in re.findall(r"<tr><td>(.*?)</td>", table)] == list(
        names.layers), "a row per layer, in order"
    # every summary sentence is still there, collapsed at the end
    summary = _section(page, "summary")
    assert "<details><summary>Every summary sentence" in summary and "lowest CKA at" in summary


@pytest.mark.slow
def test_the_headline_is_above_the_first_figure_and_on_the_first_screen(demo_like: Path, tmp_path: Path,
                                                                          chromium) -> None:
    """Measured in headless Chromium at 1280 px: the rows of the headline's background colour, and the first row of
    a figure's border, in a screenshot."""
    found = chromium.check(demo_like, tmp_path)
    assert found["broken"] == [] and found["errors"] == [] and found["console"] == []
    assert "What changed most" in found["text"] and "does not hold here" in found["text"]
    shot = chromium.screenshot(demo_like, tmp_path / "top.png", tmp_path, size="1280,1600")
    keep = os.environ.get("FTPROBE_SCREENSHOTS")
    if keep:  # a folder to keep the screenshot in, to look at it
        (Path(keep) / "report_top.png").write_bytes(shot.read_bytes())
    with Image.open(shot) as img:
        px = np.asarray(img.convert("RGB")).astype(int)
    assert px.shape[1] == 1280

    def rows(rgb: tuple[int, int, int], run: int) -> np.ndarray:
        return np.nonzero(((px == np.array(rgb)).all(-1)).sum(1) >= run)[0]

    headline, borders = rows(HEADLINE_RGB, 600), rows(FIGURE_BORDER_RGB, 200)
    assert headline.size > 100, "the headline's background is on the page"
    assert borders.size, "a figure's border is in the first 1600 px"
    top, bottom, figure = headline.min(), headline.max(), borders.min()
    assert bottom - top > 100, "one block of headline, not a stray row"
    assert bottom < 900, f"the headline ends at {bottom} px, below the first screen"
    assert bottom < figure, f"the first figure (at {figure} px) is above the end of the headline ({bottom} px)"
    assert top < 300
