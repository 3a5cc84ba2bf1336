"""Metrics describe themselves: the declaration stored in the result, option help, and the compare shorthands
derived from the declarations (``--k``, ``--score``, ``--cka-*`` set exactly what they set before)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

import ftprobe.api
from ftprobe import Metric
from ftprobe.cli.compare import _shorthands
from ftprobe.core.metric import OptionHelp
from ftprobe.core.registry import get_metric, metric_specs, register_metric, unregister_metric

BUILTINS = ("cka", "weight_l2", "topk_overlap", "class_concentration")


class _Plain(Metric):
    """A metric that declares nothing beyond its name.

    More text that is not the description."""

    name = "plain_describe_test"

    def update(self, step: Any) -> None:
        pass

    def compute(self) -> Mapping[str, Any]:
        return {}


class _Declared(_Plain):
    """Docstring line that the description replaces."""

    name = "declared_describe_test"
    higher_is_more_similar = False
    title = "A declared metric"
    description = "Says what it is"
    units = {"dist*": "px"}
    headline = ("dist@*",)
    value_names = {"dist@*": "distance at {}"}
    option_help = {"k": OptionHelp("neighbours", flag="k"), "radius": "how far"}
    figure_files = ("declared_*.png",)

    def __init__(self, k: int = 3, radius: float = 1.0) -> None:
        super().__init__()
        self.k, self.radius = k, radius


def test_an_undeclared_metric_declares_the_neutral_defaults() -> None:
    d = _Plain.declaration()
    assert d == {"higher_is_more_similar": None, "title": "plain_describe_test",
                 "description": "A metric that declares nothing beyond its name.", "units": "", "headline": [],
                 "interval_keys": [], "value_names": {}, "option_help": {}, "figure_files": []}
    assert _Plain.figures(object()) is None  # the default hook: the report draws its default figures


def test_a_declaration_is_json_data_with_option_help_and_flags() -> None:
    d = _Declared.declaration()
    assert json.loads(json.dumps(d)) == d
    assert d["higher_is_more_similar"] is False and d["title"] == "A declared metric"
    assert _Declared.describe() == d["description"] == "Says what it is"
    assert d["option_help"] == {"k": {"help": "neighbours", "flag": "k"}, "radius": {"help": "how far"}}
    assert d["units"] == {"dist*": "px"} and d["headline"] == ["dist@*"]


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_declares_its_direction_title_headline_and_every_option(name: str) -> None:
    cls = get_metric(name)
    d = cls.declaration()
    assert d["higher_is_more_similar"] is cls.higher_is_more_similar
    assert d["title"] != name and d["headline"] and d["figure_files"]
    options = set(cls().options())
    assert set(d["option_help"]) == options, f"{name}: options without help: {options - set(d['option_help'])}"


def test_the_shorthands_come_from_the_declarations_and_set_what_they_did() -> None:
    found = {flag: targets for flag, targets in _shorthands().items()}
    builtin = {flag: {m: o for m, o in t.items() if m in BUILTINS} for flag, t in found.items()}
    assert builtin == {"k": {"topk_overlap": "k", "class_concentration": "k"},
                       "score": {"topk_overlap": "score", "class_concentration": "score"},
                       "cka_cross": {"cka": "cross"}, "cka_features": {"cka": "features"},
                       "cka_estimator": {"cka": "estimator"}}


def test_a_registered_metric_joins_a_shorthand_it_declares() -> None:
    register_metric(_Declared)
    try:
        assert _shorthands()["k"]["declared_describe_test"] == "k"
        assert "declared_describe_test" not in _shorthands(("declared_describe_test",)).get("k", {})
    finally:
        unregister_metric("declared_describe_test")
    assert "declared_describe_test" not in metric_specs()


class _Stop(Exception):
    pass


def test_compare_shorthand_flags_reach_the_api_as_metric_options(run_cli, monkeypatch, tmp_path) -> None:
    seen: dict[str, Any] = {}

    def fake_compare(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise _Stop

    for entry in ("compare", "run_comparison"):  # whichever the command calls: the options are what is checked
        monkeypatch.setattr(ftprobe.api, entry, fake_compare, raising=False)
    with pytest.raises(_Stop):
        run_cli("compare", "a.pt", "b.pt", "--out", str(tmp_path / "out"), "--k", "5", "--score", "max",
                "--cka-cross", "--cka-features", "flatten", "--cka-estimator", "minibatch",
                "-o", "topk_overlap.positive_only=false")
    assert seen["options"] == {
        "topk_overlap": {"positive_only": False, "k": 5, "score": "max"},
        "class_concentration": {"k": 5, "score": "max"},
        "cka": {"cross": True, "features": "flatten", "estimator": "minibatch"},
    }
    seen.clear()
    with pytest.raises(_Stop):
        run_cli("compare", "a.pt", "b.pt", "--out", str(tmp_path / "out2"), "--k", "3", "--k", "all")
    assert seen["options"] == {"topk_overlap": {"k": [3, "all"]}, "class_concentration": {"k": [3, "all"]}}


def test_metrics_lists_options_with_help_and_shorthands(run_cli) -> None:
    r = run_cli("metrics", "--options")
    assert r.exit_code == 0, r.stderr
    for text in ("cka options", "--cka-estimator", "topk_overlap options", "--score", "higher = similar",
                 "higher = changed"):
        assert text in r.out, text
