"""Models of different architectures (resnet18 against resnet34, a small CNN against a tiny ViT): per-model layer
lists, the cross-layer CKA matrix against an independent float64 reference, metrics that pair units left out or
refused, a replaced head of another width through CKA, and the CLI end to end."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import ftprobe
from ftprobe.core.errors import MetricNeedsError, ModelMismatch
from ftprobe.report import figures

TESTS = Path(__file__).resolve().parents[1]


def _load_reference() -> ModuleType:
    path = TESTS / "reference" / "cka_numpy.py"
    spec = importlib.util.spec_from_file_location("_ftprobe_cka_numpy_oracle_cross", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

N, SIZE, BATCH = 24, 32, 8


def _images(n: int = N, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _batches(x: torch.Tensor, batch: int = BATCH) -> list[tuple[torch.Tensor, None]]:
    return [(part, None) for part in x.split(batch)]


def _features(model: nn.Module, names: list[str], x: torch.Tensor, batch: int = BATCH) -> list[list[np.ndarray]]:
    """Each layer's spatially (or token-) averaged output per batch, captured with plain forward hooks (no ftprobe
    code): ``[layer][batch] -> (n, C)`` float64."""
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    modules = dict(model.named_modules())

    def hook(name: str):
        def fn(_m: nn.Module, _i: object, y: torch.Tensor) -> None:
            y = y.detach()
            if y.dim() == 3:  # tokens (N, T, D): the mean over tokens
                y = y.transpose(1, 2)
            out[name].append((y if y.dim() == 2 else y.flatten(2).mean(dim=2)).double().numpy())

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        model.eval()
        with torch.no_grad():
            for part in x.split(batch):
                model(part)
    finally:
        for h in handles:
            h.remove()
    return [out[n] for n in names]


def _reference_matrix(xs: list[list[np.ndarray]], ys: list[list[np.ndarray]], estimator: str) -> np.ndarray:
    mat = np.zeros((len(xs), len(ys)))
    for i, xb in enumerate(xs):
        for j, yb in enumerate(ys):
            if estimator == "minibatch":
                mat[i, j] = ref.minibatch_cka(xb, yb)
            elif estimator == "debiased":
                mat[i, j] = ref.linear_cka_debiased(np.concatenate(xb), np.concatenate(yb))
            else:
                mat[i, j] = ref.linear_cka(np.concatenate(xb), np.concatenate(yb))
    return mat


ESTIMATORS = {"exact": {}, "debiased": {"debiased": True}, "minibatch": {"estimator": "minibatch"}}


@functools.lru_cache(maxsize=1)
def _built_resnets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10), torchvision.models.resnet34(num_classes=10)


def _resnets() -> tuple[nn.Module, nn.Module]:
    """Random-init resnet18 and resnet34 (built once per session: initialising resnet34 costs more than a test's
    forwards), as fresh copies."""
    return copy.deepcopy(_built_resnets())


def _star(result: ftprobe.Result):
    return next(v for v in result.select("cka") if v.layer == "*")


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_resnet18_against_resnet34_cross_matrix_equals_the_reference(estimator: str) -> None:
    base, tuned = _resnets()
    x = _images()
    base_layers, tuned_layers = ["layer1", "layer3", "layer4"], ["layer1", "layer2.1", "layer3.5", "layer4", "fc"]
    notes: list[str] = []
    r = ftprobe.compare(base, tuned, layers=base_layers, tuned_layers=tuned_layers, data=_batches(x), metrics="cka",
                        options={"cka": ESTIMATORS[estimator]}, device="cpu", size=SIZE, notice=notes.append)
    star = _star(r)
    assert star.arrays["layers"] == base_layers and star.arrays["tuned_layers"] == tuned_layers
    got = np.asarray(star.arrays["cka_cross"])
    assert got.shape == (3, 5)
    want = _reference_matrix(_features(base, base_layers, x), _features(tuned, tuned_layers, x), estimator)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert not [v for v in r.select("cka") if v.layer != "*"]  # lists of other lengths are not paired: no diagonal
    assert any("not paired" in n for n in notes)
    # each model's own layers, with their channel counts, are in the provenance
    tuned_recs = [rec for rec in r.layers if rec.get("model") == "tuned"]
    assert [rec["name"] for rec in tuned_recs] == tuned_layers
    assert tuned_recs[-1]["shape"] == [10] and tuned_recs[1]["shape"] == [128, 4, 4]


def test_default_layers_per_architecture_pair_and_give_the_full_matrix() -> None:
    base, tuned = _resnets()
    x = _images()
    notes: list[str] = []
    r = ftprobe.compare(base, tuned, data=_batches(x), metrics="cka", device="cpu", size=SIZE, notice=notes.append)
    natural = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert any("another architecture" in n and "natural blocks" in n for n in notes)
    star = _star(r)
    assert star.arrays["layers"] == natural
    mat = np.asarray(star.arrays["cka_cross"])  # on by default across architectures, as torch-cka gives it
    want = _reference_matrix(_features(base, natural, x), _features(tuned, natural, x), "exact")
    np.testing.assert_allclose(mat, want, rtol=0, atol=1e-9)
    for i, layer in enumerate(natural):  # equal-length lists are paired: the diagonal is the per-layer value
        assert r.get("cka", layer, "cka") == pytest.approx(mat[i, i], abs=1e-12)


def test_layers_named_for_the_base_only_on_another_architecture_ask_for_tuned_layers() -> None:
    base, tuned = _resnets()
    with pytest.raises(ModelMismatch, match=r"another architecture.*--tuned-layers"):
        ftprobe.compare(base, tuned, layers=["layer4"], data=_batches(_images()), metrics="cka", device="cpu",
                        size=SIZE)


@pytest.mark.parametrize("metric", ["weight_l2", "topk_overlap"])
def test_a_metric_that_pairs_units_is_refused_when_named(metric: str) -> None:
    base, tuned = _resnets()
    progressed: list[int] = []
    with pytest.raises(MetricNeedsError, match=rf"{metric}.*cannot run on these models.*same architecture"):
        ftprobe.compare(base, tuned, layers=["layer4"], tuned_layers=["layer4"], data=_batches(_images()),
                        metrics=f"cka,{metric}", device="cpu", size=SIZE, progress=progressed.append)
    assert progressed == []  # refused before the pass


def test_metrics_that_pair_units_are_skipped_with_a_notice_when_not_named() -> None:
    base, tuned = _resnets()
    notes: list[str] = []
    r = ftprobe.compare(base, tuned, layers=["layer3", "layer4"], tuned_layers=["layer3", "layer4"],
                        data=_batches(_images()), device="cpu", size=SIZE, notice=notes.append)
    skipped = {s["metric"]: s["reason"] for s in r.skipped_metrics}
    for name in ("weight_l2", "topk_overlap"):
        assert "same architecture" in skipped[name]
        assert skipped[name].startswith(f"metric {name!r} pairs ")  # the summary line names the metric
        assert any(n == f"skipped {skipped[name]}" for n in notes)
        assert not list(r.select(name))
    assert r.get("cka", "layer4", "cka") > 0


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def _vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=8, num_classes=5)


@pytest.mark.parametrize("tuned_layers", [["blocks.0", "blocks.5", "blocks.11"], ["blocks.2", "norm"]],
                         ids=["unpaired", "paired"])
def test_a_cnn_against_a_vit(tuned_layers: list[str]) -> None:
    torch.manual_seed(0)
    cnn, vit = SmallCNN(), _vit()
    x = _images()
    base_layers = ["conv1", "conv2"]
    r = ftprobe.compare(cnn, vit, layers=base_layers, tuned_layers=tuned_layers, data=_batches(x), metrics="cka",
                        device="cpu", size=SIZE, input_size=SIZE)
    star = _star(r)
    mat = np.asarray(star.arrays["cka_cross"])
    want = _reference_matrix(_features(cnn, base_layers, x), _features(vit, tuned_layers, x), "exact")
    assert mat.shape == (2, len(tuned_layers))
    np.testing.assert_allclose(mat, want, rtol=0, atol=1e-9)
    assert star.arrays["tuned_layers"] == tuned_layers
    per_layer = {v.layer: v.scalars["cka"] for v in r.select("cka") if v.layer != "*"}
    if len(tuned_layers) == len(base_layers):  # paired by position, under the base's names
        assert per_layer == pytest.approx({"conv1": mat[0, 0], "conv2": mat[1, 1]}, abs=1e-12)
        rec = {rec["name"]: rec for rec in r.layers}["conv2"]
        assert rec["per_model"] == {"base": "conv2", "tuned": "norm"}
        assert rec["per_model_shape"] == {"base": [16, 16, 16], "tuned": [17, 192]}  # channels per model
    else:
        assert per_layer == {}


def test_a_replaced_head_of_another_width_goes_through_cka() -> None:
    torch.manual_seed(0)
    base = torchvision.models.resnet18()  # 1000 classes
    tuned = copy.deepcopy(base)
    tuned.fc = nn.Linear(512, 5)
    with torch.no_grad():
        for p in tuned.layer4.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _images()
    notes: list[str] = []
    r = ftprobe.compare(base, tuned, layers=["layer4", "fc"], data=_batches(x), metrics="cka,topk_overlap",
                        options={"topk_overlap": {"k": 3}}, device="cpu", size=SIZE, notice=notes.append)
    xs, ys = _features(base, ["layer4", "fc"], x), _features(tuned, ["layer4", "fc"], x)
    assert xs[1][0].shape[1] == 1000 and ys[1][0].shape[1] == 5
    for i, layer in enumerate(["layer4", "fc"]):
        want = ref.linear_cka(np.concatenate(xs[i]), np.concatenate(ys[i]))
        assert r.get("cka", layer, "cka") == pytest.approx(want, abs=1e-9)
    # top-k overlap pairs channels: it runs on layer4 and leaves the head out, saying so
    assert {v.layer for v in r.select("topk_overlap") if v.scope == "pair"} == {"layer4"}
    assert any("'fc' left out" in n for n in r.metrics["topk_overlap"]["notes"])
    assert any("replaced head" in n for n in notes)
    assert {rec["name"]: rec for rec in r.layers}["fc"]["per_model_shape"] == {"base": [1000], "tuned": [5]}


def test_inner_layers_of_another_width_are_still_refused_without_tuned_layers() -> None:
    from ftprobe.testing import TinyNet

    with pytest.raises(ModelMismatch, match=r"output shape.*--tuned-layers"):
        ftprobe.compare(TinyNet(width=8), TinyNet(width=12), layers="mixed3a", data=[(torch.randn(4, 3, 16, 16), None)],
                        metrics="cka", device="cpu")


def test_the_heatmap_labels_each_axis_with_its_models_layer_names(monkeypatch, tmp_path) -> None:
    base, tuned = _resnets()
    r = ftprobe.compare(base, tuned, layers=["layer1", "layer4"], tuned_layers=["layer2.1", "layer3.5", "fc"],
                        data=_batches(_images()), metrics="cka", device="cpu", size=SIZE)
    drawn = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: (drawn.append(fig), save(fig, path))[1])
    figs = figures.cka_cross(r, tmp_path)
    assert len(figs) == 1 and figs[0].path.exists() and "no diagonal" in figs[0].caption
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer2.1", "layer3.5", "fc"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer1", "layer4"]


# -- the CLI -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_end_to_end_with_tuned_layers_writes_the_heatmap(run_cli, image_folder, tmp_path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "compare", "torchvision:resnet18", "torchvision:resnet34", "--layers", "layer1", "--layers", "layer4",
        "--tuned-layers", "layer1", "--tuned-layers", "layer3", "--tuned-layers", "layer4", "--data", image_folder,
        "--size", "32", "--batch-size", "6", "--device", "cpu", "--out", out)
    assert code == 0, err
    assert "skipped metric 'topk_overlap' pairs channels" in stdout + err and "Traceback" not in stdout + err
    assert "cka cross-layer matrix" in stdout  # the terminal shows the matrix too: there are no per-layer rows
    matrix_rows = [line for line in stdout.splitlines() if line.startswith(("│ layer1 ", "│ layer4 "))]
    assert len(matrix_rows) == 2 and all(line.count("0.") + line.count("1.0") >= 3 for line in matrix_rows)
    res = json.loads((out / "results.json").read_text())
    star = next(v for v in res["values"] if v["metric"] == "cka" and v["layer"] == "*")
    assert star["arrays"]["tuned_layers"] == ["layer1", "layer3", "layer4"]
    assert np.asarray(star["arrays"]["cka_cross"]).shape == (2, 3)
    assert (out / "figures" / "cka_cross_pair1.png").stat().st_size > 0
    html = (out / "report.html").read_text()  # figures are embedded: the heatmap's alt text and caption
    assert 'alt="Cross-layer CKA (resnet18 → resnet34)"' in html and "there is no diagonal" in html


def test_cli_base_and_tuned_prefixes_and_refusal_without_traceback(run_cli, image_folder) -> None:
    code, stdout, err = run_cli(
        "compare", "torchvision:resnet18", "torchvision:resnet34", "--layers", "base=layer4", "--layers",
        "tuned=layer4", "--data", image_folder, "--size", "32", "--device", "cpu", "--metrics", "cka,weight_l2",
        "--json", "-")
    assert code == 1
    assert "weight_l2" in err and "same architecture" in err and "Traceback" not in stdout + err
    code, stdout, err = run_cli(
        "compare", "torchvision:resnet18", "torchvision:resnet34", "--layers", "layer4", "--data", image_folder,
        "--size", "32", "--device", "cpu", "--metrics", "cka", "--json", "-")
    assert code == 1 and "--tuned-layers" in err and "Traceback" not in stdout + err


# -- plugin metrics and the metric on its own -------------------------------------------------------------------


def test_the_similarity_plugin_runs_across_architectures_on_paired_layers() -> None:
    sim = pytest.importorskip("ftprobe_similarity.functional")
    torch.manual_seed(0)
    cnn, vit = SmallCNN(), _vit()
    x = _images(n=40)
    r = ftprobe.compare(cnn, vit, layers=["conv2"], tuned_layers=["blocks.11"], data=_batches(x),
                        metrics="procrustes,mutual_knn", options={"mutual_knn": {"k": 5}}, device="cpu",
                        size=SIZE, input_size=SIZE)
    xb = torch.from_numpy(np.concatenate(_features(cnn, ["conv2"], x)[0]))  # (40, 16)
    yb = torch.from_numpy(np.concatenate(_features(vit, ["blocks.11"], x)[0]))  # (40, 192)
    assert r.get("procrustes", "conv2", "procrustes") == pytest.approx(float(sim.procrustes(xb, yb)), abs=1e-9)
    assert r.get("mutual_knn", "conv2", "mutual_knn") == pytest.approx(float(sim.mutual_knn(xb, yb, k=5)), abs=1e-12)


def test_layerwise_metrics_need_lists_of_equal_length() -> None:
    pytest.importorskip("ftprobe_similarity")
    base, tuned = _resnets()
    with pytest.raises(MetricNeedsError, match=r"svcca.*lists of equal length"):
        ftprobe.compare(base, tuned, layers=["layer4"], tuned_layers=["layer3", "layer4"], data=_batches(_images()),
                        metrics="cka,svcca", device="cpu", size=SIZE)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_unpaired_cka_state_merges_like_one_pass(estimator: str) -> None:
    from ftprobe.core.metric import Activation, PairStep, RunContext
    from ftprobe.metrics.cka import CKA

    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(30, 4, generator=g, dtype=torch.float64)]
    ys = [xs[0] @ torch.randn(6, 9, generator=g, dtype=torch.float64) + torch.randn(30, 9, generator=g,
                                                                                    dtype=torch.float64) * 0.1
          for _ in range(3)]
    ctx = RunContext(layers=("a", "b"), shapes={"a": (6,), "b": (4,)}, tuned_layers=("p", "q", "r"),
                     tuned_shapes={"p": (9,), "q": (9,), "r": (9,)}, units_paired=False)

    def step(lo: int, hi: int) -> PairStep:
        base = {n: Activation(n, {"gap": t[lo:hi]}) for n, t in zip("ab", xs)}
        tuned = {n: Activation(n, {"gap": t[lo:hi]}) for n, t in zip("pqr", ys)}
        return PairStep(None, base, tuned, torch.arange(lo, hi))

    def ready() -> CKA:
        m = CKA(**ESTIMATORS[estimator])
        m.setup(ctx)
        return m

    one, first, second = ready(), ready(), ready()
    for lo in range(0, 30, 10):
        one.update(step(lo, lo + 10))
        (first if lo < 20 else second).update(step(lo, lo + 10))
    first.merge_state(second)
    a, b = one.compute()["*"], first.compute()["*"]
    assert one.cross is True and a["tuned_layers"] == ["p", "q", "r"] and list(one.compute()) == ["*"]
    torch.testing.assert_close(a["cka_cross"], b["cka_cross"], rtol=0, atol=1e-12)
    want = _reference_matrix([[t.numpy()[lo:lo + 10] for lo in range(0, 30, 10)] for t in xs],
                             [[t.numpy()[lo:lo + 10] for lo in range(0, 30, 10)] for t in ys], estimator)
    np.testing.assert_allclose(a["cka_cross"].numpy(), want, rtol=0, atol=1e-10)


def test_cross_false_on_unpaired_layers_is_refused_with_the_fix() -> None:
    from ftprobe.core.metric import RunContext
    from ftprobe.metrics.cka import CKA

    ctx = RunContext(layers=("a",), shapes={"a": (4,)}, tuned_layers=("p", "q"), units_paired=False)
    with pytest.raises(MetricNeedsError, match="drop cross=False"):
        CKA(cross=False).setup(ctx)


def test_class_concentration_keeps_its_per_model_parts_across_architectures() -> None:
    from torch.utils.data import DataLoader

    from ftprobe.testing import TinyImages

    base, tuned = _resnets()
    data = DataLoader(TinyImages(n=24, size=SIZE, classes=3), batch_size=BATCH)
    notes: list[str] = []
    r = ftprobe.compare(base, tuned, layers=["layer3", "layer4"], tuned_layers=["layer3", "layer4"], data=data,
                        options={"class_concentration": {"k": 4}}, preprocess="none", device="cpu", size=SIZE,
                        notice=notes.append)
    assert "topk_overlap" in {s["metric"] for s in r.skipped_metrics}
    for layer in ("layer3", "layer4"):
        per_model = {m: r.get("class_concentration", layer, "entropy_mean@4", model=m) for m in ("base", "tuned")}
        change = r.get("class_concentration", layer, "entropy_mean_change@4")
        assert change == pytest.approx(per_model["tuned"] - per_model["base"], abs=1e-12)
        pair = next(v for v in r.select("class_concentration") if v.layer == layer and v.scope == "pair")
        assert "entropy_change@4" not in pair.arrays  # channel i of resnet18 is not channel i of resnet34
        assert "no per-channel change" in pair.scalars.get("note", "") + str(pair.arrays.get("note", ""))


def test_class_concentration_leaves_the_per_channel_change_out_of_a_replaced_head_only() -> None:
    from torch.utils.data import DataLoader

    from ftprobe.testing import TinyImages

    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10)
    tuned = copy.deepcopy(base)
    tuned.fc = nn.Linear(512, 3)
    data = DataLoader(TinyImages(n=24, size=SIZE, classes=3), batch_size=BATCH)
    r = ftprobe.compare(base, tuned, layers=["layer4", "fc"], data=data, metrics="class_concentration",
                        options={"class_concentration": {"k": 4}}, preprocess="none", device="cpu", size=SIZE)
    pairs = {v.layer: v for v in r.select("class_concentration") if v.scope == "pair"}
    assert "entropy_change@4" in pairs["layer4"].arrays and "entropy_change@4" not in pairs["fc"].arrays


def test_a_channel_metric_named_on_nothing_but_a_replaced_head_is_refused() -> None:
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10)
    tuned = copy.deepcopy(base)
    tuned.fc = nn.Linear(512, 3)
    with pytest.raises(MetricNeedsError, match=r"topk_overlap.*every selected layer differs in width"):
        ftprobe.compare(base, tuned, layers=["fc"], data=_batches(_images()), metrics="cka,topk_overlap",
                        device="cpu", size=SIZE)
    r = ftprobe.compare(base, tuned, layers=["fc"], data=_batches(_images()), device="cpu", size=SIZE)
    assert "topk_overlap" in {s["metric"] for s in r.skipped_metrics} and r.get("cka", "fc", "cka") > 0
