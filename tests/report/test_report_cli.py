"""``ftprobe report`` re-renders without a model; ``ftprobe top-images`` runs one layer and draws a grid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ftprobe.report import validate_results
from ftprobe.testing import TinyNet, perturbed_copy


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pickled_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("report_models")
    base = TinyNet(num_classes=3, seed=0)
    torch.save(base, d / "base.pt")
    torch.save(perturbed_copy(base, noise=0.3, seed=1), d / "tuned.pt")
    return d / "base.pt", d / "tuned.pt"


@pytest.mark.slow
def test_report_rerenders_the_same_figures_without_a_model(run_cli, report_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import ftprobe.core.engine
    import ftprobe.core.loading

    def no_model(*args, **kwargs):
        raise AssertionError("ftprobe report must not load or run a model")

    monkeypatch.setattr(ftprobe.core.loading, "load_model", no_model)
    monkeypatch.setattr(ftprobe.core.engine.Engine, "run", no_model)
    r = run_cli("report", str(report_dir / "results.json"), "--out", str(tmp_path), "--summary", "Re-rendered.")
    assert r.exit_code == 0, r.stderr
    assert f"report written to {tmp_path / 'report.html'}" in r.stderr
    assert (tmp_path / "results.json").read_bytes() == (report_dir / "results.json").read_bytes()
    old = {p.name: p.read_bytes() for p in (report_dir / "figures").glob("*.png")}
    new = {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("*.png")}
    assert new == old  # the JSON holds everything the figures need, exactly
    assert "Re-rendered." in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_report_defaults_to_the_folder_of_the_results(run_cli, report_dir: Path, tmp_path: Path) -> None:
    data = json.loads((report_dir / "results.json").read_text())  # weight values only: a quick render
    data.update(data=None, metrics={"weight_l2": data["metrics"]["weight_l2"]},
                values=[v for v in data["values"] if v["metric"] == "weight_l2"])
    src = tmp_path / "run" / "results.json"
    (src.parent / "figures").mkdir(parents=True)
    src.write_text(json.dumps(data))
    for stale in ("cka_per_layer.png", "grid_pair1_layer1_x.png", "mine.png"):  # an earlier render, a user file
        (src.parent / "figures" / stale).write_bytes(b"old")
    r = run_cli("report", str(src))
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (src.parent / "figures").iterdir()) == ["mine.png", "weight_change.png"]
    assert "Weight change (parameter space)" in (src.parent / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("content", "expect"), [
    pytest.param(None, "no results file at", id="missing"),
    pytest.param('{"schema_version": 1, "models": []}', "does not follow the results schema", id="bad-schema"),
])
def test_report_user_errors_are_one_line(run_cli, tmp_path: Path, content: str | None, expect: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    r = run_cli("report", str(path), "--out", str(tmp_path / "out"))
    assert r.exit_code == 1 and expect in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_top_images_draws_the_asked_channels(run_cli, pickled_models, hostile_images: Path, tmp_path: Path,
                                             one_thread) -> None:
    base, tuned = pickled_models
    r = run_cli("top-images", str(base), str(tuned), "--trust-checkpoint", "--layer", "mixed4d",
                    "--channels", "0,3,17", "--data", str(hostile_images), "--size", "32", "--k", "4",
                    "--out", str(tmp_path / "grid.png"), "--json", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.stderr
    assert "channel 17: top-4 overlap" in r.stderr and "grid written to" in r.stderr
    with Image.open(tmp_path / "grid.png") as img:
        rows = (img.size[1] - 44) // (20 + 96 + 12 + 16)
        assert rows == 3 and img.size[0] > 8 * 96
    data = json.loads((tmp_path / "r.json").read_text())
    validate_results(data)
    assert [m["sha256"] for m in data["models"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (base, tuned)]
    assert set(data["metrics"]) == {"topk_overlap"} and data["metrics"]["topk_overlap"]["options"]["k"] == 4


@pytest.mark.parametrize(("channels", "code", "expect"), [
    pytest.param("0,99", 1, "pick channels in 0..31 (got [99])", id="out-of-range"),
    pytest.param("a,b", 2, "is not a comma-separated list", id="not-numbers"),
])
def test_top_images_bad_channels(run_cli, pickled_models, hostile_images: Path, tmp_path: Path, one_thread,
                                 channels: str, code: int, expect: str) -> None:
    base, tuned = pickled_models
    r = run_cli("top-images", str(base), str(tuned), "--trust-checkpoint", "--layer", "mixed4d",
                    "--channels", channels, "--data", str(hostile_images), "--size", "32",
                    "--out", str(tmp_path / "grid.png"))
    assert r.exit_code == code and expect in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "grid.png").exists()


def test_help_lists_the_report_commands(run_cli) -> None:
    r = run_cli("--help")
    assert r.exit_code == 0 and "report" in r.output and "top-images" in r.output
