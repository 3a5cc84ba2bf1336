"""A metric the user did not name never stops a run, including one whose own ``setup`` refuses the data (a plugin's
``mutual_knn`` needs more than k samples): it is left out with a notice and recorded as skipped. Named, it is an
error that says how to fix it."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from ftprobe.testing import make_image_folder, perturbed_copy

pytest.importorskip("ftprobe_similarity")  # CI installs it: .ci/run installs plugins/ftprobe-similarity


@pytest.fixture(scope="module")
def eight_images_and_resnets(tmp_path_factory):
    d = tmp_path_factory.mktemp("eight")
    data = make_image_folder(d / "imgs", classes=2, per_class=4, size=32, seed=0)
    torch.manual_seed(0)
    base = torchvision.models.resnet18(weights=None)
    torch.save(base.state_dict(), d / "a.pt")
    torch.save(perturbed_copy(base, 0.1).state_dict(), d / "b.pt")
    return d, data


def test_an_unnamed_metric_whose_setup_refuses_the_data_is_skipped_with_a_notice(run_cli, eight_images_and_resnets):
    d, data = eight_images_and_resnets
    out = d / "out"
    code, stdout, stderr = run_cli("compare", str(d / "a.pt"), str(d / "b.pt"), "--arch", "torchvision:resnet18",
                                   "--data", str(data), "--size", "32", "--layers", "layer3", "--layers", "layer4",
                                   "--json", str(out / "r.json"), "--out", str(out))
    assert code == 0, stderr
    said = " ".join((stdout + stderr).split())
    assert "skipped metric 'mutual_knn'" in said and "needs more than k samples" in said
    assert "'mutual_knn': mutual_knn:" not in said  # the metric is named once
    result = json.loads((out / "r.json").read_text())
    skipped = {s["metric"]: s["reason"] for s in result["skipped_metrics"]}
    assert "needs more than k samples" in skipped["mutual_knn"]
    assert "mutual_knn" not in result["metrics"]
    assert "cka" in result["metrics"] and "svcca" in result["metrics"]  # the other metrics ran


def test_the_same_metric_named_is_an_error_with_the_fix(run_cli, eight_images_and_resnets):
    d, data = eight_images_and_resnets
    code, _, stderr = run_cli("compare", str(d / "a.pt"), str(d / "b.pt"), "--arch", "torchvision:resnet18",
                              "--data", str(data), "--size", "32", "--layers", "layer4", "-m", "cka,mutual_knn",
                              "--out", str(d / "out2"))
    assert code == 1
    assert "mutual_knn" in stderr and "needs more than k samples" in " ".join(stderr.split())
    assert "Traceback" not in stderr
