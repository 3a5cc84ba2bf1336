"""The README's snippets are code: the metric example must run as written (a drifted README is a bug)."""

from __future__ import annotations

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
