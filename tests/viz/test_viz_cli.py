"""``ftprobe visualize``: channels given or picked, grids written, user mistakes reported in one line."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from ftprobe.core.results import Result, Value
from ftprobe.testing import TinyNet, perturbed_copy


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("viz_cli")
    base = TinyNet()
    torch.save(base, d / "base.pt")
    torch.save(perturbed_copy(base, 0.2), d / "tuned.pt")
    return str(d / "base.pt"), str(d / "tuned.pt")


def test_channels_two_models_grid_and_json(run_cli, tiny_files, tmp_path):
    out = tmp_path / "g.png"
    code, stdout, err = run_cli("visualize", *tiny_files, "--trust-checkpoint", "--layer", "mixed4a",
                                "--channels", "1,5", "--steps", "3", "--size", "32", "--out", str(out))
    assert code == 0, err
    assert "ch 1" in stdout and "ch 5" in stdout and "base" in stdout and "tuned" in stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["channels"] == [1, 5] and meta["models"] == ["base", "tuned"] and meta["settings"]["steps"] == 3
    assert out.stat().st_size > 0 and f"grid written to {out}" in err


def test_transforms_none_turns_the_random_transforms_off(run_cli, tiny_files, tmp_path):
    outs = {}
    for choice in ("standard", "none"):
        out = tmp_path / f"{choice}.png"
        code, _, err = run_cli("visualize", tiny_files[0], "--trust-checkpoint", "--layer", "mixed4a",
                               "--channels", "1", "--steps", "2", "--size", "32", "--transforms", choice,
                               "--out", str(out))
        assert code == 0, err
        outs[choice] = json.loads(out.with_suffix(".json").read_text())["settings"]["transforms"]
    assert outs["none"] == "Compose([])" and "Jitter(d=8)" in outs["standard"] and "Pad(width=12" in outs["standard"]


def test_pick_most_changed(run_cli, tiny_files, tmp_path):
    code, stdout, err = run_cli("visualize", *tiny_files, "--trust-checkpoint", "-l", "mixed3a",
                                "--pick", "most-changed", "--top", "2", "--steps", "1", "--size", "32",
                                "--out", str(tmp_path / "m.png"))
    assert code == 0, err
    meta = json.loads((tmp_path / "m.json").read_text())
    assert len(meta["channels"]) == 2 and meta["pick"]["source"] == "r_c of mixed3a.0"
    assert meta["pick"]["values"][0] >= meta["pick"]["values"][1] > 0
    assert "r=" in stdout


def test_pick_overlap_extremes_from_results(run_cli, tiny_files, tmp_path):
    res = Result(layers=[{"spec": "mixed4a", "name": "mixed4a"}], values=[
        Value("topk_overlap", "mixed4a", "pair", base="base", tuned="tuned",
              arrays={"overlap@5": [60.0, 20.0, 80.0, 40.0, 0.0, 100.0, 20.0, 40.0] + [50.0] * 8})])
    path = res.save(tmp_path / "results.json")
    code, _, err = run_cli("visualize", *tiny_files, "--trust-checkpoint", "-l", "mixed4a",
                           "--pick", "overlap-extremes", "--results", str(path), "--steps", "1", "--size", "32",
                           "--out", str(tmp_path / "o.png"))
    assert code == 0, err
    meta = json.loads((tmp_path / "o.json").read_text())
    # 16 values: the median is sorted[(16 - 1) // 2] = sorted[7] (channel 10)
    assert meta["channels"] == [4, 10, 5] and meta["pick"]["roles"] == ["lowest", "median", "highest"]


def test_googlenet_state_dicts_by_lucid_alias(run_cli, tmp_path):
    torch.manual_seed(0)
    g = torchvision.models.googlenet(weights=None, init_weights=True)
    torch.save(g.state_dict(), tmp_path / "b.pt")
    torch.save(perturbed_copy(g, 0.1).state_dict(), tmp_path / "t.pt")
    code, stdout, err = run_cli("visualize", str(tmp_path / "b.pt"), str(tmp_path / "t.pt"), "--arch",
                            "torchvision:googlenet", "-l", "mixed4d", "--pick", "most-changed", "--steps", "1",
                            "--size", "64", "--preprocess", "caffe", "--out", str(tmp_path / "g.png"))
    assert code == 0, err
    meta = json.loads((tmp_path / "g.json").read_text())
    assert meta["layer"] == "inception4d" and meta["spec"] == "mixed4d" and meta["settings"]["preprocess"] == "caffe"
    assert "branch1.conv" in meta["pick"]["source"] and all(0 <= c < 528 for c in meta["channels"])
    assert "inception4d" in stdout and "(mixed4d)" in stdout


@pytest.mark.parametrize("extra,message", [
    pytest.param([], "give either --channels", id="no-channels-no-pick"),
    pytest.param(["--channels", "1", "--pick", "most-changed"], "give either --channels", id="both"),
    pytest.param(["--pick", "overlap-extremes"], "add --results", id="overlap-without-results"),
    pytest.param(["--channels", "1,x"], "comma-separated integers", id="bad-channels"),
    pytest.param(["--channels", "99"], "has 16 channels", id="channel-out-of-range"),
    pytest.param(["--channels", "1", "--layer", "mixed9"], "Unknown layer 'mixed9'", id="unknown-layer"),
])
def test_user_mistakes_one_line(run_cli, tiny_files, tmp_path, extra, message):
    args = ["visualize", *tiny_files, "--trust-checkpoint", "--steps", "1", "--size", "32",
            "--out", str(tmp_path / "x.png")]
    if "--layer" not in extra:
        args += ["--layer", "mixed4a"]
    code, _, err = run_cli(*args, *extra)
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_most_changed_needs_two_models(run_cli, tiny_files):
    code, _, err = run_cli("visualize", tiny_files[0], "--trust-checkpoint", "-l", "mixed4a", "--pick", "most-changed")
    assert code == 1 and "two models" in err


def test_untrusted_pickle_is_refused(run_cli, tiny_files, tmp_path):
    code, _, err = run_cli("visualize", tiny_files[0], "-l", "mixed4a", "--channels", "0",
                           "--out", str(tmp_path / "u.png"))
    assert code == 1 and "--trust-checkpoint" in err
