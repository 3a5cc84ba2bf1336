"""results.json: a versioned JSON Schema shipped in the package; files that break it are refused with a location."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest

from ftprobe.core.errors import FtprobeError
from ftprobe.core.results import SCHEMA_VERSION, Result, Value
from ftprobe.report import SCHEMA_PATH, ResultsFileError, load_results, results_schema, validate_results


def test_schema_is_a_valid_draft_2020_12_schema_of_the_current_version() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert results_schema() == schema


def test_written_results_validate_and_hold_the_provenance(report_dir: Path, names) -> None:
    data = json.loads((report_dir / "results.json").read_text())
    jsonschema.validate(data, results_schema(), cls=jsonschema.Draft202012Validator)
    assert set(data["run"]["versions"]) >= {"ftprobe", "torch"}
    assert {"device", "batch_size", "seed", "duration_s", "samples"} <= set(data["run"])
    assert [r["spec"] for r in data["layers"]] == list(names.layers)
    assert sorted(data["data"]["classes"]) == sorted(names.classes) and data["data"]["num_samples"] == 15
    assert data["data"]["preprocess"]["name"] == "imagenet"
    assert data["metrics"]["cka"]["options"]["estimator"] == "exact"
    assert all(int(i) >= 0 for i in data["data"]["index_paths"])


def test_results_round_trip_through_the_file(report_result: Result, report_dir: Path) -> None:
    loaded = load_results(report_dir / "results.json")
    assert loaded.to_dict() == json.loads(report_result.to_json())
    assert load_results(report_dir).to_dict() == loaded.to_dict()  # a folder means its results.json


def test_non_finite_scalars_are_strings_that_validate(report_result: Result) -> None:
    res = copy.deepcopy(report_result)
    res.values.append(Value("cka", "mixed4d", "pair", base="base", tuned="run2", scalars={"cka": math.nan}))
    d = json.loads(res.to_json())
    validate_results(d)
    assert d["values"][-1]["scalars"]["cka"] == "nan"


def _break_version(d: dict) -> None:
    d["schema_version"] = 99


def _pair_without_base(d: dict) -> None:
    next(v for v in d["values"] if v["scope"] == "pair")["base"] = None


def _bad_sha(d: dict) -> None:
    d["models"][0]["sha256"] = "not-a-digest"


def _no_versions(d: dict) -> None:
    del d["run"]["versions"]


def _unknown_value_field(d: dict) -> None:
    d["values"][0]["colour"] = "red"


@pytest.mark.parametrize(("mutate", "expect"), [
    pytest.param(_break_version, "schema version 99", id="wrong-version"),
    pytest.param(_pair_without_base, "at values/", id="pair-value-without-base"),
    pytest.param(_bad_sha, "at models/0/sha256", id="sha256-not-hex"),
    pytest.param(_no_versions, "at run", id="run-without-versions"),
    pytest.param(_unknown_value_field, "at values/0", id="unknown-value-field"),
])
def test_broken_files_are_refused_with_where(report_dir: Path, tmp_path: Path, mutate, expect: str) -> None:
    d = json.loads((report_dir / "results.json").read_text())
    mutate(d)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ResultsFileError, match=expect) as err:
        load_results(path)
    assert isinstance(err.value, FtprobeError)


@pytest.mark.parametrize(("content", "expect"), [
    pytest.param(None, "no results file", id="missing"),
    pytest.param("{not json", "not a readable JSON", id="not-json"),
    pytest.param("[1, 2]", "not a results object", id="json-list"),
])
def test_unreadable_files_are_user_errors(tmp_path: Path, content: str | None, expect: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsFileError, match=expect):
        load_results(path)


def test_a_version_1_file_still_loads_and_validates(report_dir: Path, tmp_path: Path) -> None:
    """Files written before intervals (schema version 1: no ``intervals``, ``resampling`` or ``controls``) load
    against their own schema and read as results without intervals."""
    d = json.loads((report_dir / "results.json").read_text())
    d["schema_version"] = 1
    d.pop("resampling", None)
    d.pop("controls", None)
    for v in d["values"]:
        v.pop("intervals", None)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(d))
    res = load_results(path)
    assert res.resampling is None and all(not v.intervals for v in res.values)
    assert [v.scalars for v in res.values] == [v.scalars for v in load_results(report_dir).values]
    d["values"][0]["intervals"] = {}  # a version 1 file is held to the version 1 schema
    path.write_text(json.dumps(d))
    with pytest.raises(ResultsFileError, match="at values/0"):
        load_results(path)
