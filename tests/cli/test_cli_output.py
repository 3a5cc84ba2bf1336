"""What the terminal shows: model labels, readable tables, notices, progress with an ETA, status while loading and
rendering, the interruption warning before the values it speaks of, and -q anywhere."""

from __future__ import annotations

import json
import re

import pytest

import ftprobe
from ftprobe.cli.app import App
from ftprobe.testing import make_image_folder


def _models(d):
    return [str(d / "base.pt"), str(d / "run1" / "model.pt"), str(d / "run2" / "model.pt")]


def test_default_labels_are_the_shortest_distinguishing_paths(run_cli, tiny_runs, tmp_path):
    r = run_cli("compare", *_models(tiny_runs), "--trust-checkpoint", "-l", "conv2d0", "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "r.json").read_text())
    assert [m["label"] for m in res["models"]] == ["base", "run1/model", "run2/model"]
    assert "base → run1/model" in r.out and "#2" not in r.out


def test_label_names_models_in_order(run_cli, tiny_runs, tmp_path):
    r = run_cli("compare", *_models(tiny_runs), "--trust-checkpoint", "-l", "conv2d0", "--label", "imagenet",
                "--label", "lr-1e-3", "--label", "lr-1e-4", "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "r.json").read_text())
    assert [m["label"] for m in res["models"]] == ["imagenet", "lr-1e-3", "lr-1e-4"]
    assert res["pairs"] == [["imagenet", "lr-1e-3"], ["imagenet", "lr-1e-4"]]


def test_label_count_and_duplicates_are_user_errors(run_cli, tiny_runs):
    r = run_cli("compare", *_models(tiny_runs), "--trust-checkpoint", "--label", "a", "--label", "b")
    assert r.code == 2 and "--label" in r.err and "given 2 times for 3 models" in r.err
    r = run_cli("compare", *_models(tiny_runs), "--trust-checkpoint", "--label", "a", "--label", "b", "--label", "a",
                "--json", "-")
    assert r.code == 1 and "'a' is given to more than one model" in r.err and "Traceback" not in r.err


def test_quiet_is_accepted_after_the_sub_command(run_cli, tiny_runs, cli_images, tmp_path):
    args = ["compare", *_models(tiny_runs)[:2], "--trust-checkpoint", "-l", "conv2d0", "--data", cli_images,
            "--size", "32", "-m", "cka", "--json", tmp_path / "r.json"]
    loud = run_cli(*args)
    assert loud.code == 0 and "note:" in loud.err
    for quiet in (run_cli(*args, "-q"), run_cli("-q", *args), run_cli(*args[:1], "--quiet", *args[1:])):
        assert quiet.code == 0, quiet.err
        assert "note:" not in quiet.err and "cka (per pair)" in quiet.out
    assert run_cli("metrics", "-q").code == 0


def test_several_k_values_keep_whole_headers(run_cli, tiny_runs, cli_images, tmp_path):
    r = run_cli("compare", *_models(tiny_runs), "--trust-checkpoint", "-l", "conv2d0", "-l", "mixed5b",
                "--data", cli_images, "--size", "32", "-m", "topk_overlap,class_concentration", "--k", "2", "--k", "5",
                "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert "…" not in r.out  # nothing cut to fit
    for header in ("overlap_mean", "overlap_median", "entropy_mean_change", "entropy_median"):
        assert f" {header} " in r.out
    rows = [line for line in r.out.splitlines() if line.startswith("│ base → run2/model │ mixed5b")]
    assert len(rows) == 4 and {row.split("│")[3].strip() for row in rows} == {"2", "5"}  # one row per k
    assert all(len(line) <= 160 for line in r.out.splitlines())


def test_limit_above_the_data_size_is_said(run_cli, tiny_runs, cli_images, tmp_path):
    r = run_cli("compare", *_models(tiny_runs)[:2], "--trust-checkpoint", "-l", "conv2d0", "--data", cli_images,
                "--size", "32", "-m", "cka", "--limit", "100", "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    note = "--limit 100 is more than the 12 samples"
    assert note in r.err
    res = json.loads((tmp_path / "r.json").read_text())
    assert any(note in n for n in res["data"]["notes"]) and res["run"]["samples"] == 12


def test_interruption_warning_comes_before_the_tables_it_speaks_of(run_cli, tiny_runs, cli_images, tmp_path,
                                                                   monkeypatch):
    events = []

    class Interrupting:
        def __enter__(self):
            def advance(n):
                raise KeyboardInterrupt  # Ctrl-C after the first batch

            return advance

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(App, "progress", lambda self, total, description="streaming": Interrupting())
    real_warn, real_print = App.warn, App.print
    monkeypatch.setattr(App, "warn", lambda self, msg: (events.append(("warn", msg)), real_warn(self, msg)))
    monkeypatch.setattr(App, "print", lambda self, t: (events.append(("table", t.title)), real_print(self, t)))
    r = run_cli("compare", *_models(tiny_runs)[:2], "--trust-checkpoint", "-l", "conv2d0", "--data", cli_images,
                "--size", "32", "-b", "4", "-m", "cka", "--out", tmp_path / "o")
    assert r.code == 130
    kinds = [k for k, _ in events]
    assert kinds[0] == "warn" and "the values below" in events[0][1] and "table" in kinds[1:]
    assert "interrupted after 4 samples" in events[0][1]


def test_terminal_shows_status_while_loading_and_rendering_and_an_eta(run_cli, tiny_runs, cli_images, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich treats the captured stderr as a terminal
    monkeypatch.setenv("COLUMNS", "150")
    r = run_cli("compare", *_models(tiny_runs)[:2], "--trust-checkpoint", "-l", "conv2d0", "--data", cli_images,
                "--size", "32", "-b", "4", "-m", "cka", "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert "loading " in r.err and "model.pt…" in r.err  # the spinner's text, model by model
    assert "rendering report…" in r.err
    assert "streaming" in r.err and "12/12" in r.err and " eta " in r.err  # the progress bar, with an ETA
    grid = run_cli("top-images", *_models(tiny_runs)[:2], "--trust-checkpoint", "--layer", "conv2d0", "--channels",
                   "1", "--data", cli_images, "--size", "32", "--k", "2", "--out", tmp_path / "g.png")
    assert grid.code == 0, grid.err
    assert "loading " in grid.err and "streaming" in grid.err and "drawing the grid…" in grid.err
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    plain = run_cli("compare", *_models(tiny_runs)[:2], "--trust-checkpoint", "-l", "conv2d0", "--data", cli_images,
                    "--size", "32", "-m", "cka", "--out", tmp_path / "p")
    assert plain.code == 0 and "loading" not in plain.err and "eta" not in plain.err  # logs stay clean


def test_top_images_checks_channels_before_streaming(run_cli, tiny_runs, cli_images, tmp_path, monkeypatch):
    from ftprobe.data.sources import DataSource, _IndexedSource

    streamed = []
    for cls in (DataSource, _IndexedSource):
        monkeypatch.setattr(cls, "batches", lambda self: streamed.append(1) or iter(()))
    r = run_cli("top-images", *_models(tiny_runs)[:2], "--trust-checkpoint", "--layer", "conv2d0",
                "--channels", "3,9999", "--data", cli_images, "--size", "32", "--out", tmp_path / "g.png")
    assert r.code == 1 and "Traceback" not in r.err
    assert "--channels: layer 'conv2d0' has 8 channels; pick channels in 0..7 (got [9999])" in r.err
    assert streamed == []  # refused after the probe, before any image was read


@pytest.mark.parametrize("command", ["layers", "metrics"])
def test_verbose_is_accepted_after_the_sub_command(run_cli, command):
    args = ["torchvision:resnet18", "--filter", "layer1"] if command == "layers" else []
    r = run_cli(command, *args, "-v")
    assert r.code == 0, r.err


def test_compare_with_intervals_and_controls_from_the_command_line(run_cli, tiny_runs, tmp_path):
    models = [tiny_runs / "base.pt", tiny_runs / "run1" / "model.pt", tiny_runs / "run2" / "model.pt"]
    data = make_image_folder(tmp_path / "imgs", classes=3, per_class=6, size=20)
    r = run_cli("compare", *models, "--trust-checkpoint", "-l", "mixed3a", "-l", "mixed5b", "--data", data,
                "--size", "16", "--batch-size", "6", "--metrics", "cka,weight_l2", "--label", "base", "--label", "a1",
                "--label", "a2", "--intervals", "--interval-groups", "6", "--level", "0.9", "--random-init",
                "--seed-pair", "a1,a2", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert "6 groups of images" in r.stderr  # the cost, said before the pass
    assert "90% delete-one-group jackknife interval over 6 groups of images" in r.output
    assert re.search(r"\d\.\d+ \[\d\.\d+, \d\.\d+\]", r.output)  # a CKA cell with its interval
    res = ftprobe.Result.load(tmp_path / "out" / "results.json")
    assert res.resampling["groups"] == 6 and res.resampling["level"] == 0.9
    assert res.controls == {"random_init": "random_init", "seed_pairs": [["a1", "a2"]]}
    assert {(v.base, v.tuned) for v in res.select("cka") if v.intervals} == {
        ("base", "a1"), ("base", "a2"), ("a1", "a2"), ("base", "random_init")}
    bad = run_cli("compare", *models, "--trust-checkpoint", "-l", "mixed3a", "--data", data, "--size", "16",
                  "--label", "base", "--label", "a1", "--label", "a2", "--seed-pair", "a1,a3", "--json", "-")
    assert bad.exit_code == 1 and "no model is labelled 'a3'" in bad.stderr and "--label" in bad.stderr
