from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
import torch

from ftprobe.cli import cli


def test_compare_googlenet_state_dicts_by_lucid_alias(run_cli, googlenet_checkpoints, tmp_path):
    base, tuned = googlenet_checkpoints
    r = run_cli("compare", str(base), str(tuned), "--arch", "torchvision:googlenet", "--layers", "mixed4d",
                "--out", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert "inception4d (mixed4d)" in r.output and "weight_l2" in r.output
    res = json.loads((tmp_path / "results.json").read_text())
    [layer] = res["layers"]
    assert (layer["spec"], layer["name"], layer["alias"]) == ("mixed4d", "inception4d", True)
    l2 = [v for v in res["values"] if v["metric"] == "weight_l2"][0]["scalars"]["l2"]
    assert l2 > 0


def test_compare_with_data_all_metrics_json_stdout(run_cli, googlenet_checkpoints, cli_images):
    base, tuned = googlenet_checkpoints
    r = run_cli("compare", str(base), str(tuned), "--arch", "torchvision:googlenet", "--layers", "mixed4d",
                "--layers", "mixed5b", "--data", str(cli_images), "--size", "64", "--batch-size", "6",
                "--k", "3", "--json", "-")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.output)  # stdout holds JSON only
    # every installed metric runs (plugins too); the four built-ins at least
    assert {v["metric"] for v in res["values"]} >= {"cka", "weight_l2", "topk_overlap", "class_concentration"}
    assert res["run"]["samples"] == 12


def test_compare_two_timm_models(run_cli, tmp_path):
    timm = pytest.importorskip("timm")  # timm is a test dependency: installed in CI, so this runs
    torch.manual_seed(0)
    m = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    torch.save(m.state_dict(), tmp_path / "a.pt")
    with torch.no_grad():
        m.layer3[0].conv1.weight.add_(0.01)
    torch.save(m.state_dict(), tmp_path / "b.pt")
    r = run_cli("compare", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--arch", "timm:resnet10t",
                "--layers", "layer3", "--json", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    v = [v for v in res["values"] if v["metric"] == "weight_l2"][0]
    assert v["scalars"]["l2"] == pytest.approx(0.01 * m.layer3[0].conv1.weight.numel() ** 0.5, rel=1e-4)


def test_unknown_layer_is_one_message_no_traceback(run_cli, googlenet_checkpoints):
    base, tuned = googlenet_checkpoints
    r = run_cli("compare", str(base), str(tuned), "--arch", "torchvision:googlenet", "--layers", "mixed4x")
    assert r.exit_code == 1
    assert "Unknown layer 'mixed4x'" in r.stderr and "Did you mean" in r.stderr and "Traceback" not in r.stderr


def test_state_dict_without_arch_says_what_to_pass(run_cli, googlenet_checkpoints):
    base, tuned = googlenet_checkpoints
    r = run_cli("compare", str(base), str(tuned), "--layers", "mixed4d")
    assert r.exit_code == 1 and "--arch" in r.stderr


def test_named_metric_with_unmet_needs_is_an_error(run_cli, googlenet_checkpoints):
    base, tuned = googlenet_checkpoints
    r = run_cli("compare", str(base), str(tuned), "--arch", "torchvision:googlenet", "-l", "mixed4d", "-m", "cka")
    assert r.exit_code == 1 and "needs data" in r.stderr


def test_layers_lists_shapes_aliases_and_repeated_calls(run_cli):
    r = run_cli("layers", "torchvision:googlenet", "--filter", "inception4*", "--input-size", "64")
    assert r.exit_code == 0, r.stderr
    assert "inception4d" in r.output and "mixed4d" in r.output and "528×4×4" in r.output


def test_metrics_lists_builtins_with_provider(run_cli):
    r = run_cli("metrics")
    assert r.exit_code == 0
    for name in ("cka", "weight_l2", "topk_overlap", "class_concentration"):
        assert name in r.output
    assert "ftprobe" in r.output and "weights" in r.output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "ftprobe", "--help"], capture_output=True, text=True, check=True)
    assert "compare" in out.stdout and "layers" in out.stdout


def test_bad_option_syntax_is_a_usage_error(run_cli, googlenet_checkpoints):
    base, tuned = googlenet_checkpoints
    r = run_cli("compare", str(base), str(tuned), "--arch", "torchvision:googlenet", "-o", "nonsense")
    assert r.exit_code == 2 and "METRIC.KEY=VALUE" in r.stderr


def test_no_duplicate_option_flags():
    for name, cmd in cli.commands.items():
        seen: set[str] = set()
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    assert opt not in seen, f"{name}: {opt} declared twice"
                    seen.add(opt)
