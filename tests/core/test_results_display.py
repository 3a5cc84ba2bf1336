"""A Result in a terminal (repr/str) and in Jupyter (_repr_html_): a short summary with the headline numbers."""

from __future__ import annotations

import html
import re

import torch

import ftprobe
from ftprobe.core.results import Result, Value
from ftprobe.testing import TinyNet, perturbed_copy


def _big_result(n_layers: int = 12, channels: int = 832, n_tuned: int = 3) -> Result:
    """The shape of a GoogLeNet study: 12 layers, per-channel arrays, three tuned models against one base."""
    layers = [f"inception{i}" for i in range(n_layers)]
    labels = ["base", *(f"run{i}" for i in range(1, n_tuned + 1))]
    values = []
    for t in labels[1:]:
        for i, layer in enumerate(layers):
            values.append(Value("cka", layer, "pair", base="base", tuned=t, scalars={"cka": 0.9 - i / 100, "n": 5e4}))
            values.append(Value("topk_overlap", layer, "pair", base="base", tuned=t,
                                scalars={"dead_in_both": 2.0, "overlap_mean@100": 40.0 + i, "overlap_q1@100": 20.0},
                                arrays={"overlap@100": [37.5] * channels,
                                        "base_index@100": [[j] * 100 for j in range(channels)]}))
        values.append(Value("cka", "*", "pair", base="base", tuned=t, scalars={"debiased": 0.0}))
    return Result(models=[{"label": lab, "source": f"/runs/{lab}.pt", "kind": "state_dict"} for lab in labels],
                  pairs=[("base", t) for t in labels[1:]], layers=[{"spec": n, "name": n} for n in layers],
                  data={"kind": "image_folder", "root": "/data/art", "num_samples": 50_000}, values=values,
                  metrics={"cka": {"provider": "ftprobe", "options": {}},
                           "topk_overlap": {"provider": "ftprobe", "options": {}}},
                  run={"samples": 50_000})


def test_repr_is_a_short_summary_with_the_headline_numbers() -> None:
    res = _big_result()
    text = repr(res)
    assert len(text) < 3000, len(text)  # the dataclass repr of this result is millions of characters
    assert str(res) == text
    first = text.splitlines()[0]
    assert first == "<ftprobe.Result: 4 models, 3 pairs, 12 layers, 2 metrics, 50000 images"
    assert "base, run1, run2, run3" in text and "/data/art" in text
    assert "cka" in text and "topk_overlap [overlap_mean@100]" in text  # the headline of each metric, named
    rows = [line for line in text.splitlines() if line.strip().startswith("base → run2")]
    assert len(rows) == 2  # one per metric
    assert rows[0].split()[3:5] == ["0.90000", "0.89000"] and rows[0].split()[-1] == "0.79000"  # first and last layer
    assert "…" in text.splitlines()[text.splitlines().index(rows[0]) - 1]  # middle layers elided in the header
    assert "result.records()" in text and "to_pandas()" in text  # how to get everything


def test_repr_of_a_real_run_and_its_value_reprs() -> None:
    base = TinyNet(num_classes=3, seed=0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(6, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]))]
    res = ftprobe.compare(base, perturbed_copy(base, noise=0.2), layers=["conv2d0", "mixed5b"], data=data,
                          metrics="cka,weight_l2,topk_overlap", options={"topk_overlap": {"k": 2}}, device="cpu")
    text = repr(res)
    assert "3 metrics, 6 images" in text and "base, tuned" in text
    cka = res.get("cka", "mixed5b", "cka")
    assert f"{cka:.5f}" in text
    assert "weight_l2 [l2]" in text
    v = next(res.select("topk_overlap", "mixed5b"))
    assert len(repr(v)) < 600 and "<list of " in repr(v)


def test_repr_html_is_a_table_and_escapes_names() -> None:
    res = _big_result(n_layers=3, n_tuned=1)
    res.models[1]["label"] = "<script>alert(1)</script>"
    res.pairs = [("base", "<script>alert(1)</script>")]
    res.values = [Value(v.metric, v.layer, v.scope, base=v.base, tuned="<script>alert(1)</script>",
                        scalars=v.scalars, arrays=v.arrays) for v in res.values]
    res.warnings.append("a & b < c")
    page = res._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b &lt; c" in page
    assert page.count("<table>") == 1 and len(page) < 6000
    cells = re.findall(r"<td style='text-align:right'>([^<]*)</td>", page)
    assert cells[:3] == ["0.90000", "0.89000", "0.88000"]  # cka per layer, in layer order
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "inception0" in text and "overlap_mean@100" in text


def test_weight_only_result_says_so() -> None:
    res = Result(models=[{"label": "a"}, {"label": "b"}], pairs=[("a", "b")], layers=[{"spec": "l", "name": "l"}],
                 metrics={"weight_l2": {"provider": "ftprobe", "options": {}}},
                 values=[Value("weight_l2", "l", "pair", base="a", tuned="b", scalars={"l2": 1.5, "relative": 0.1})])
    text = repr(res)
    assert text.startswith("<ftprobe.Result: 2 models, 1 pair, 1 layer, 1 metric, weights only (no images)")
    assert "weight_l2 [l2]" in text and "1.50000" in text
