"""A plugin's metrics are first-class in the report: their own section, figure and summary sentence, from what they
declare about themselves (stored in the result, so a re-render needs no plugin), and no ftprobe code names them."""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import json
import os
import re
from pathlib import Path

import pytest

import ftprobe
from ftprobe.core.registry import metric_specs
from ftprobe.core.results import Result, Value
from ftprobe.report import load_results, validate_results, write_report
from ftprobe.report.html import summary_sentences

PLUGIN = {  # metric → (section title, a figure's alt text, the start of its summary sentence after "base → ...: ")
    "svcca": ("SVCCA (mean canonical correlation)", "SVCCA canonical correlations", "lowest SVCCA at "),
    "pwcca": ("PWCCA (projection-weighted CCA)", "PWCCA per layer", "lowest PWCCA at "),
    "procrustes": ("Orthogonal Procrustes distance", "Procrustes distance per layer",
                   "largest Procrustes distance at "),
    "mutual_knn": ("Mutual k-nearest-neighbour alignment", "mutual k-NN alignment per layer",
                   "lowest mutual k-NN alignment at "),
}
SRC = Path(ftprobe.__file__).parent


@pytest.fixture(scope="module")
def plugin_result(report_result: Result) -> Result:
    """The plugin's part of the report fixture's run (every installed metric ran there), and the first pair only."""
    missing = [m for m in PLUGIN if m not in report_result.metrics]
    assert not missing, f"ftprobe-similarity is not installed (pip install ./plugins/ftprobe-similarity): {missing}"
    first = report_result.pairs[:1]
    return dataclasses.replace(
        report_result, pairs=first, metrics={m: report_result.metrics[m] for m in PLUGIN},
        values=[v for v in report_result.values if v.metric in PLUGIN and (v.base, v.tuned) in first])


def _sections(page: str) -> dict[str, str]:
    """``{h2 title: section html}`` of a report page."""
    return {m.group(1): m.group(2) for m in re.finditer(r"<section id=\"[^\"]+\"><h2>(.*?)</h2>(.*?)</section>",
                                                          page, re.S)}


def _check_page(page: str, result: Result, plugin: dict = PLUGIN) -> None:
    sections = _sections(page)
    (b, t), = result.pairs
    summary = sections["Summary"]
    for metric, (title, alt, sentence) in plugin.items():
        assert title in sections, f"{metric}: no section titled {title!r}"
        body = sections[title]
        assert body.count("<img ") >= 1, f"{metric}: its section has no figure"
        assert f'alt="{alt}"' in body, f"{metric}: figure {alt!r} not in its own section"
        assert metric in body  # the value table's column
        assert f"{b} → {t}: {sentence}".replace(">", "&gt;").replace("<", "&lt;") in summary, (metric, summary)


@pytest.mark.slow
def test_plugin_metrics_get_section_figure_and_sentence_in_chromium(plugin_result: Result, tmp_path: Path,
                                                                    chromium) -> None:
    html = write_report(plugin_result, tmp_path / "report")
    page = html.read_text(encoding="utf-8")
    _check_page(page, plugin_result)
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert figures == ["mutual_knn_1.png", "procrustes_1.png", "pwcca_1.png", "svcca_correlations.png"]
    found = chromium.check(html, tmp_path)
    assert found["broken"] == [] and found["errors"] == [] and found["console"] == []
    assert sorted(found["alts"]) == sorted(alt for _, alt, _ in PLUGIN.values())
    assert min(found["widths"]) > 300
    (b, t), = plugin_result.pairs
    headline = found["text"].split("Models: ")[0]  # the page's first lines, shown open
    for metric, (title, _, _) in PLUGIN.items():
        name = plugin_result.metrics[metric]["declared"]["value_names"][metric]
        assert title in found["text"], metric
        assert f"{name[:1].upper()}{name[1:]} between {b} and {t} " in headline, (metric, headline)
    shot = chromium.screenshot(html, tmp_path / "plugin.png", tmp_path, size="1280,2600")
    keep = os.environ.get("FTPROBE_SCREENSHOTS")
    if keep:  # a folder to keep the screenshot in, to look at it
        (Path(keep) / "report_plugin_metrics.png").write_bytes(shot.read_bytes())
    assert shot.stat().st_size > 10_000


def test_a_re_render_without_the_plugin_draws_from_the_stored_declarations(plugin_result: Result, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = plugin_result.save(tmp_path / "run" / "results.json")
    validate_results(json.loads(src.read_text()))
    monkeypatch.setenv("FTPROBE_DISABLE_PLUGIN_AUTOLOAD", "1")  # only ftprobe's own metrics are installed now
    assert not set(PLUGIN) & set(metric_specs())
    html = write_report(src, tmp_path / "again")
    page = html.read_text(encoding="utf-8")
    no_hook = {**PLUGIN, "svcca": (PLUGIN["svcca"][0], "SVCCA per layer", PLUGIN["svcca"][2])}  # its own needs its code
    _check_page(page, plugin_result, no_hook)
    assert (tmp_path / "again" / "figures" / "svcca_1.png").is_file()


def _declared(direction: bool | None, units: str = "") -> dict:
    return {"higher_is_more_similar": direction, "title": "Made-up alignment", "headline": ["align@*"],
            "value_names": {"align@*": "alignment at scale {}"}, "units": units}


@pytest.mark.parametrize(("direction", "units", "expect"), [
    (True, "", "a → b: lowest alignment at scale 2 at l2 (0.25000)."),
    (False, "%", "a → b: largest alignment at scale 4 at l1 (90.0%)."),
    (None, "", "a → b: alignment at scale 2 from 0.25000 at l2 to 0.50000 at l1."),
])
def test_the_declared_direction_decides_the_summary_sentence(direction, units, expect) -> None:
    values = [Value("made_up", "l1", "pair", base="a", tuned="b", scalars={"align@2": 0.5, "align@4": 90.0}),
              Value("made_up", "l2", "pair", base="a", tuned="b", scalars={"align@2": 0.25, "align@4": 1.0})]
    res = Result(models=[{"label": "a"}, {"label": "b"}], pairs=[("a", "b")],
                 layers=[{"spec": n, "name": n, "alias": False} for n in ("l1", "l2")],
                 metrics={"made_up": {"provider": "x", "options": {}, "declared": _declared(direction, units)}},
                 values=values)
    assert summary_sentences(res)[-1] == expect


def test_an_old_results_file_without_declarations_still_loads_and_renders(report_dir: Path, tmp_path: Path) -> None:
    data = json.loads((report_dir / "results.json").read_text())
    for rec in data["metrics"].values():
        rec.pop("declared", None)
    data["values"] = [v for v in data["values"] if v["metric"] in ("weight_l2", "svcca")]
    data["data"] = None
    src = tmp_path / "old.json"
    src.write_text(json.dumps(data))
    res = load_results(src)
    page = write_report(res, tmp_path / "out").read_text(encoding="utf-8")
    sections = _sections(page)
    assert "Weight change (parameter space)" in sections and "SVCCA (mean canonical correlation)" in sections
    assert "largest relative weight change at " in sections["Summary"]  # from the installed class's declaration


# -- nothing in the report or the CLI decides by a metric's name ----------------------------------------------------

def _names() -> set[str]:
    return set(metric_specs()) | set(PLUGIN)


def _named(node: ast.AST, names: set[str]) -> list[str]:
    """Metric names (or globs that spell part of one, ``"topk_*"``; not ``"*"``, the layer of no single layer) among
    the string constants in ``node``."""
    consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return [s for s in consts if s in names or (re.match(r"[A-Za-z0-9_]{2,}[*?[]", s) is not None
                                                and any(fnmatch.fnmatchcase(n, s) for n in names))]


def _decisions(tree: ast.AST, names: set[str]) -> set[tuple[int, str]]:
    """Metric names used to decide: in a comparison (``==``, ``in``), an ``if``/ternary/``while`` test, a key or
    element of a module-level table, or as the metric argument that picks values (``pair_values(r, "cka")``)."""
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            hits += [(node.lineno, s) for s in _named(node, names)]
        elif isinstance(node, (ast.If, ast.IfExp, ast.While)):
            hits += [(node.lineno, s) for s in _named(node.test, names)]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "pair_values", "model_values", "MetricValues", "get_metric"):
            hits += [(node.lineno, s) for a in node.args for s in _named(a, names)]
    for stmt in getattr(tree, "body", []):
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            hits += [(stmt.lineno, s) for s in _named(stmt.value, names)]
    return set(hits)


def test_no_metric_name_decides_anything_in_the_report_or_the_cli() -> None:
    names = _names()
    assert {"cka", "topk_overlap", "weight_l2", "class_concentration"} <= names
    found = []
    for folder in ("report", "cli"):
        for path in sorted((SRC / folder).glob("*.py")):
            for line, name in _decisions(ast.parse(path.read_text(encoding="utf-8")), names):
                found.append(f"{path.relative_to(SRC.parent)}:{line}: {name!r}")
    found.sort()
    assert not found, "metric names deciding behaviour:\n" + "\n".join(found)


def test_the_name_check_finds_what_it_looks_for() -> None:
    names = {"cka", "topk_overlap", "svcca"}
    code = ('T = {"cka": "x"}\nG = ("topk_*",)\ndef f(v, r):\n    if v.metric == "svcca":\n        pass\n'
            '    return pair_values(r, "cka") if "cka" in r else [x for x in r if x != "topk_overlap"]\n'
            'def g(r):\n    return r.select("cka")\n')
    lines = sorted(line for line, _ in _decisions(ast.parse(code), names))
    assert lines == [1, 2, 4, 6, 6]  # not line 8: asking for a metric's values by name is not deciding
