"""A metric's cautions reach the user: the values' notes go with the result, under the terminal table and into
report.html; the cautions known before the pass (k larger than the data, too few samples) are the metric's notes."""

from __future__ import annotations

import copy
import math

import pytest
from rich.console import Console

import ftprobe
from ftprobe.cli.render import metric_tables
from ftprobe.report.html import build_html
from ftprobe.testing import TinyImages, tiny_pair


@pytest.fixture(scope="module")
def tiny_result() -> ftprobe.Result:
    base, _ = tiny_pair()
    return ftprobe.compare(base, copy.deepcopy(base), data=TinyImages(n=2, size=16), layers=["mixed4a", "mixed5b"],
                           metrics={"cka": {}, "topk_overlap": {"k": 100}}, batch_size=8, size=16,
                           preprocess="none", device="cpu")


def _table_text(result: ftprobe.Result) -> str:
    console = Console(record=True, width=240, color_system=None)
    for table in metric_tables(result):
        console.print(table)
    return console.export_text()


def test_the_numbers_on_tiny_data_carry_their_notes(tiny_result: ftprobe.Result) -> None:
    for layer in ("mixed4a", "mixed5b"):
        assert math.isnan(tiny_result.get("cka", layer, "cka"))  # 2 samples: CKA would be 1 for any two models
        assert "at least 3" in tiny_result.get("cka", layer, "note")
        assert tiny_result.get("topk_overlap", layer, "overlap_mean@100") == 100.0
        assert "k=100:" in tiny_result.get("topk_overlap", layer, "note")
    assert any("the data has 2 samples" in n for n in tiny_result.metrics["cka"]["notes"])
    assert any("k=100 is more than the 2 images" in n for n in tiny_result.metrics["topk_overlap"]["notes"])


def test_notes_are_printed_under_the_terminal_table(tiny_result: ftprobe.Result) -> None:
    text = " ".join(_table_text(tiny_result).split())  # the caption wraps: compare the words
    assert "note (base → tuned, mixed4a; base → tuned, mixed5b): NaN: 2 samples; linear CKA needs at least 3" in text
    assert "k=100: " in text and "top-100 sets hold" in text


def test_notes_are_in_the_report(tiny_result: ftprobe.Result) -> None:
    html = build_html(tiny_result, [])
    assert "NaN: 2 samples; linear CKA needs at least 3" in html
    assert "k=100: " in html and "the data has 2 samples" in html  # the value's note and the metric's note


def test_enough_data_gives_no_caution() -> None:
    base, tuned = tiny_pair()
    result = ftprobe.compare(base, tuned, data=TinyImages(n=24, size=16), layers=["mixed4a"], batch_size=8, size=16,
                             metrics={"cka": {}, "topk_overlap": {"k": 1}}, preprocess="none", device="cpu")
    assert result.notes("cka") == [] and "note (" not in _table_text(result).split("topk_overlap")[0]
    assert not any("k=1:" in note for note, _ in result.notes("topk_overlap"))
    assert not any("more than" in n for n in result.metrics["topk_overlap"]["notes"])
