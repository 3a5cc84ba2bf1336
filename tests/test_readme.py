"""The README's snippets are code: the metric example must run as written (a drifted README is a bug)."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest
import torch

import ftprobe
from ftprobe.core.registry import unregister_metric
from ftprobe.testing import TinyNet, perturbed_copy

README = pathlib.Path(__file__).parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_commands_exist():
    text = README.read_text()
    assert "pip install -e '.[test]'" in text
    assert "python -m pytest" in text
    assert "ftprobe demo --quick" in text
    ci = (README.parent / ".ci" / "run").read_text()
    for cmd in ("pip install -e '.[test]'", "python -m pytest", "ftprobe demo --quick"):
        assert cmd in ci


def test_readme_metric_example_runs():
    [code] = [b for b in _blocks("python") if "class MeanShift" in b]
    ns: dict = {}
    exec(code, ns)
    ftprobe.register_metric(ns["MeanShift"])
    try:
        base = TinyNet()
        x = [(torch.randn(8, 3, 16, 16), None)]
        same = ftprobe.compare(base, base, data=x, metrics="mean_shift", layers="mixed3a")
        assert same.get("mean_shift", "mixed3a", "mean_shift") == pytest.approx(0.0, abs=1e-12)
        moved = ftprobe.compare(base, perturbed_copy(base, 0.5), data=x, metrics="mean_shift", layers="mixed3a")
        assert moved.get("mean_shift", "mixed3a", "mean_shift") > 0
    finally:
        unregister_metric("mean_shift")


def _model_format_rows() -> list[list[str]]:
    text = README.read_text().split("### Model formats", 1)[1].split("\n### ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    header, rule, *body = rows
    assert header[-1] == "Test" and set("".join(rule)) <= set("-:")
    return body


def _test_names(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_readme_model_formats_table_names_tests_that_exist():
    """Every row of the Model formats table names at least one test, and each named test exists."""
    rows = _model_format_rows()
    assert len(rows) >= 10
    root = README.parent
    for row in rows:
        ids = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", row[-1])
        assert ids, f"the row {row[0]!r} names no test"
        for file, name in ids:
            assert (root / file).is_file(), f"{row[0]!r}: {file} does not exist"
            assert name in _test_names(root / file), f"{row[0]!r}: {file} has no test {name}"
