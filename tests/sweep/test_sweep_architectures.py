"""Architecture sweep: ``ftprobe.compare`` with all four metrics on 2-3 glob-selected layers of random-init
torchvision and timm classifiers, at small input sizes, 8 images (batch 4).

Each run compares the base with a perturbed copy *and* with itself (the same object passed twice, so ftprobe compares
a deep copy), in one pass. Checked per layer: the channel count the metrics see (against a table for torchvision and
timm's ``feature_info`` for timm), CKA in (-1e-9, 1 + 1e-9] (or NaN with a note), CKA(base, base) = 1,
``weight_l2`` > 0 against the perturbed copy and 0 against itself, and no non-finite activation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import ftprobe
from ftprobe.core.errors import FtprobeError
from ftprobe.core.layers import module_layout, natural_layers, probe, resolve_layers
from ftprobe.testing import perturbed_copy

timm = pytest.importorskip("timm")  # a test dependency (pyproject [test]): installed in CI, so this runs

METRICS = "cka,weight_l2,topk_overlap,class_concentration"
OPTIONS = {"topk_*": {"k": 3}, "class_concentration": {"k": 3}}  # one shared top-k state


@dataclass(frozen=True)
class Arch:
    """One architecture of the sweep.

    Attributes:
        source: ``"torchvision"`` or ``"timm"``.
        name: builder name.
        layers: globs / aliases passed as ``layers=``.
        channels: expected channel count per resolved layer; ``None`` for timm (taken from ``feature_info``).
        size: input size (the smallest the model allows, or close).
        kwargs: builder arguments (``image_size`` / ``img_size`` for small ViTs ...).
        images: number of images (batch 4).
    """

    source: str
    name: str
    layers: tuple[str, ...]
    channels: Mapping[str, int] | None = None
    size: int = 32
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    images: int = 8


def tv(name: str, layers: tuple[str, ...], channels: Mapping[str, int], size: int = 32, images: int = 8,
       **kwargs: Any) -> Any:
    return pytest.param(Arch("torchvision", name, layers, channels, size, kwargs, images), id=f"tv-{name}")


def tm(name: str, layers: tuple[str, ...], size: int = 32, **kwargs: Any) -> Any:
    return pytest.param(Arch("timm", name, layers, None, size, kwargs), id=f"timm-{name}")


TORCHVISION = [
    tv("resnet18", ("layer[34]",), {"layer3": 256, "layer4": 512}),
    tv("googlenet", ("mixed4[ae]",), {"inception4a": 512, "inception4e": 832}, size=64,
       aux_logits=True, init_weights=True),  # Lucid aliases through a glob; aux1/aux2 present (unused in eval)
    tv("inception_v3", ("Mixed_6[ae]", "Mixed_7c"), {"Mixed_6a": 768, "Mixed_6e": 768, "Mixed_7c": 2048}, size=75,
       aux_logits=True, init_weights=True),
    tv("vgg11", ("features.[68]", "features.16"), {"features.6": 256, "features.8": 256, "features.16": 512}),
    tv("densenet121", ("features.denseblock[34]",), {"features.denseblock3": 1024, "features.denseblock4": 1024}),
    tv("mobilenet_v2", ("features.1[48]",), {"features.14": 160, "features.18": 1280}),
    tv("mobilenet_v3_small", ("features.[59]",), {"features.5": 40, "features.9": 96}),
    tv("mobilenet_v3_large", ("features.1[26]",), {"features.12": 112, "features.16": 960}),
    tv("efficientnet_b0", ("features.[57]",), {"features.5": 112, "features.7": 320}),
    tv("regnet_x_400mf", ("trunk_output.block[34]",), {"trunk_output.block3": 160, "trunk_output.block4": 400}),
    tv("regnet_y_400mf", ("trunk_output.block[34]",), {"trunk_output.block3": 208, "trunk_output.block4": 440}),
    tv("convnext_tiny", ("features.[57]",), {"features.5": 384, "features.7": 768}),
    tv("vit_b_16", ("encoder.layers.encoder_layer_[19]",),
       {"encoder.layers.encoder_layer_1": 768, "encoder.layers.encoder_layer_9": 768}, image_size=32),
    tv("swin_t", ("features.[35]", "norm"), {"features.3": 192, "features.5": 384, "norm": 768}, size=64),
    tv("swin_v2_t", ("features.[35]",), {"features.3": 192, "features.5": 384}, size=64),
    tv("maxvit_t", ("blocks.[23]",), {"blocks.2": 256, "blocks.3": 512}, size=224, images=4),  # 224 px only
    tv("shufflenet_v2_x0_5", ("stage[34]",), {"stage3": 96, "stage4": 192}),
    tv("squeezenet1_1", ("features.1[02]",), {"features.10": 384, "features.12": 512}, size=64),
    tv("mnasnet0_5", ("layers.1[04]",), {"layers.10": 40, "layers.14": 1280}),
    tv("wide_resnet50_2", ("layer[23]",), {"layer2": 512, "layer3": 1024}),
    tv("resnext50_32x4d", ("layer[23]",), {"layer2": 512, "layer3": 1024}),
    tv("alexnet", ("features.[36]",), {"features.3": 192, "features.6": 384}, size=64),
]

TIMM = [
    tm("resnet10t", ("layer[34]",)),
    tm("convnext_atto", ("stages.[23]",)),
    tm("vit_tiny_patch16_224", ("blocks.[15]", "blocks.11"), img_size=32),
    tm("swin_tiny_patch4_window7_224", ("layers.[23]",), size=64, img_size=64, window_size=2),  # NHWC stages
    tm("mobilenetv3_small_050", ("blocks.[35]",)),
    tm("regnetx_002", ("s[34]",)),
    tm("efficientvit_b0", ("stages.[23]",)),
    tm("levit_128s", ("stages.[12]",), img_size=32),
    tm("mixer_s16_224", ("blocks.[37]",), img_size=32),
    tm("ghostnet_050", ("blocks.[57]",)),
    tm("mobilevit_xxs", ("stages.[23]",), size=64),
    tm("test_mambaout", ("stages.[23]",), size=64),  # NHWC stages
    tm("test_nfnet", ("stages.[12]",), size=64),
    tm("test_byobnet", ("stages.[12]",), size=64),
]


def _build(arch: Arch) -> nn.Module:
    torch.manual_seed(0)
    if arch.source == "torchvision":
        return torchvision.models.get_model(arch.name, weights=None, **arch.kwargs)
    return timm.create_model(arch.name, pretrained=False, **arch.kwargs)


def _expected_channels(arch: Arch, model: nn.Module) -> Mapping[str, int]:
    if arch.channels is not None:
        return arch.channels
    return {f["module"]: f["num_chs"] for f in model.feature_info}


def _values(result: ftprobe.Result, metric: str, subject: str) -> dict[str, Any]:
    return {v.layer: v for v in result.select(metric, subject=subject) if v.layer != "*"}


def _check_run(result: ftprobe.Result, expected: Mapping[str, int], images: int) -> None:
    layers = [rec["name"] for rec in result.layers]
    assert 2 <= len(layers) <= 3 and all(name in expected for name in layers), (layers, dict(expected))
    assert result.run["samples"] == images and not result.run["interrupted"]
    assert result.warnings == []  # no non-finite activation, no interruption
    tuned, itself = "base → tuned1", "base → tuned2"

    cka, cka_self = _values(result, "cka", tuned), _values(result, "cka", itself)
    for name in layers:
        c = cka[name].scalars["cka"]
        if math.isnan(c):
            assert cka[name].arrays.get("note"), f"{name}: NaN CKA without a note"
        else:
            assert -1e-9 < c <= 1 + 1e-9, (name, c)
        assert cka_self[name].scalars["cka"] == pytest.approx(1.0, abs=1e-9), name

    l2, l2_self = _values(result, "weight_l2", tuned), _values(result, "weight_l2", itself)
    measured = [name for name in layers if l2[name].scalars.get("modules_measured", 0) > 0]
    assert measured, "no selected layer holds a conv or linear module"
    for name in measured:
        assert l2[name].scalars["l2"] > 0, name
        assert l2_self[name].scalars["l2"] == 0.0, name

    overlap = _values(result, "topk_overlap", tuned)
    concentration = {v.layer: v for v in result.select("class_concentration") if v.scope == "model"}
    for name in layers:  # the per-channel vectors have one entry per channel: the layout rule found the channels
        assert len(overlap[name].arrays["overlap@3"]) == expected[name], name
        assert len(concentration[name].arrays["entropy@3"]) == expected[name], name


@pytest.mark.slow
@pytest.mark.parametrize("arch", TORCHVISION + TIMM)
def test_compare_all_metrics_on_glob_layers(arch: Arch, tensor_data: type) -> None:
    base = _build(arch)
    notes: list[str] = []
    result = ftprobe.compare(
        base, perturbed_copy(base, noise=0.2, seed=1), base,
        layers=list(arch.layers), data=tensor_data(arch.images, arch.size), metrics=METRICS, options=OPTIONS,
        batch_size=4, size=arch.size, input_size=arch.size, device="cpu", notice=notes.append,
    )
    _check_run(result, _expected_channels(arch, base), arch.images)
    assert any("same object" in n for n in notes)  # the third model is the base itself: compared as a copy


def test_sweep_covers_twenty_torchvision_and_eight_timm_families() -> None:
    assert len({p.values[0].name for p in TORCHVISION}) >= 20
    modules = timm.list_modules()
    families = {next(m for m in modules if timm.models.is_model_in_modules(p.values[0].name, [m])) for p in TIMM}
    assert len(families) >= 8, families


# -- channels-last layouts -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchvision_swin_channel_counts_per_layout(tensor_data: type) -> None:
    """Swin's patch-embedding conv is (N, C, H, W) inside a channels-last stage; its stages and norm are (N, H, W, C);
    the final permute is (N, C, H, W) again. Each must give its true channel count."""
    torch.manual_seed(0)
    base = torchvision.models.swin_t()
    layers = {"features.0.0": 96, "features.0": 96, "features.1.0.mlp.0": 384, "features.3": 192, "norm": 768,
              "permute": 768}
    result = ftprobe.compare(base, perturbed_copy(base), layers=list(layers), data=tensor_data(4, 64),
                             metrics="topk_overlap", options=OPTIONS, batch_size=4, input_size=64, size=64)
    got = {v.layer: len(v.arrays["overlap@3"]) for v in result.select("topk_overlap") if v.scope == "pair"}
    assert got == layers
    assert {r["name"]: r["layout"] for r in result.layers} == {
        "features.0.0": "auto", "features.0": "nhwc", "features.1.0.mlp.0": "nhwc", "features.3": "nhwc",
        "norm": "nhwc", "permute": "auto"}


class _ChannelsLast(nn.Module):
    """A conv stem, a permute to (N, H, W, C), a Linear and a LayerNorm over C, and a torchvision-style LayerNorm2d
    (a LayerNorm subclass that works channels-first)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2)
        self.proj = nn.Linear(6, 5)
        self.norm = nn.LayerNorm(5)
        self.norm2d = torchvision.models.convnext.LayerNorm2d(5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.proj(self.stem(x).permute(0, 2, 3, 1)))
        x = self.norm2d(x.permute(0, 3, 1, 2))
        return self.head(x.mean(dim=(2, 3)))


def test_module_layout_rules_by_module_type() -> None:
    model = _ChannelsLast()
    infos = probe(model, 16)
    got = {r.name: r.layout for r in resolve_layers(model, ["stem", "proj", "norm", "norm2d", "head"], infos)}
    assert got == {"stem": "auto", "proj": "nhwc", "norm": "nhwc", "norm2d": "auto", "head": "auto"}
    # the type rules win over a table entry: a conv is channels-first even inside a channels-last stage
    assert module_layout(torchvision.models.swin_t(), "features.0.0") == "auto"


# -- natural layers leave the (often replaced) classification head out ----------------------------------------------


def _headless_resnet() -> nn.Module:
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()  # a feature extractor: layer4 is (512, 1, 1) at 32 px, but it is no head
    return model


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(torchvision.models.mobilenet_v3_small, ["features"], id="linear-classifier-block"),
        pytest.param(torchvision.models.squeezenet1_1, ["features"], id="conv-classifier"),
        pytest.param(_headless_resnet, ["conv1", "layer1", "layer2", "layer3", "layer4"], id="headless-resnet"),
    ],
)
def test_natural_layers_leave_the_head_out(build: Any, expected: list[str]) -> None:
    model = build()
    assert natural_layers(model, probe(model, 32)) == expected


# -- auxiliary heads -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "aux"), [("googlenet", "aux1"), ("inception_v3", "AuxLogits")])
def test_naming_an_aux_head_says_it_does_not_run_in_eval(name: str, aux: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, aux_logits=True, init_weights=False)
    with pytest.raises(FtprobeError, match=f"'{aux}' exists in .* does not run in its forward pass"):
        ftprobe.compare(model, perturbed_copy(model), layers=[aux], metrics="weight_l2", input_size=75)


@pytest.mark.slow
def test_googlenet_checkpoints_with_and_without_aux_heads_compare(run_cli: Any, tmp_path: Any) -> None:
    """A base saved with its auxiliary heads against a fine-tune saved without them (aux_logits=False)."""
    torch.manual_seed(0)
    base = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    tuned = torchvision.models.googlenet(aux_logits=False, init_weights=False)
    tuned.load_state_dict({k: v for k, v in perturbed_copy(base).state_dict().items() if not k.startswith("aux")})
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    r = run_cli("compare", tmp_path / "base.pt", tmp_path / "tuned.pt", "--arch", "torchvision:googlenet",
            "--layers", "mixed4*", "-m", "weight_l2", "--input-size", "64", "--out", tmp_path)
    assert r.code == 0, r.err
    assert "auxiliary heads" in r.err and "Traceback" not in r.err
    result = ftprobe.Result.load(tmp_path / "results.json")
    assert {v.layer for v in result.select("weight_l2")} == {f"inception4{c}" for c in "abcde"}
    assert all(v.scalars["l2"] > 0 for v in result.select("weight_l2"))
