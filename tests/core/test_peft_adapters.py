"""PEFT LoRA adapters as tuned models: written by peft's own saving code (``PeftModel.save_pretrained``,
``torch.save(peft_model.state_dict())``, ``safetensors.torch.save_file``) on tiny torchvision, timm and transformers
bases; the weight change must be the adapter's ``scale·B·A``, computed here independently in float64."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import ftprobe
from ftprobe.core.errors import CheckpointError
from ftprobe.core.loading import load_model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

CONV_TARGETS = ["conv1", "layer1.0.conv1", "layer2.0.conv2"]  # peft matches suffixes: every block's conv1 too


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=5).eval()


def tiny_vit(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8, num_labels=3)
    return transformers.ViTForImageClassification(transformers.ViTConfig(**{**cfg, **overrides})).eval()


def lora(base: nn.Module, head: str, seed: int = 2, **config) -> nn.Module:
    """A PeftModel whose LoRA weights are random (as after training) and whose ``head`` copy (modules_to_save) was
    changed in full."""
    torch.manual_seed(seed)
    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(init_lora_weights=False, modules_to_save=[head],
                                                                      **config))
    trained_head = model.base_model.model.get_submodule(head).modules_to_save["default"]
    with torch.no_grad():
        trained_head.weight.add_(0.1 * torch.randn_like(trained_head.weight))
    return model.eval()


def lora_deltas(saved: dict[str, torch.Tensor], config: dict, base: nn.Module) -> dict[str, torch.Tensor]:
    """Module path → scale·B·A in float64, from the adapter's saved tensors and its adapter_config.json alone."""
    r, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(r) if config["use_rslora"] else alpha / r
    out = {}
    for key, a in saved.items():
        if ".lora_A." not in key:
            continue
        path = key.removeprefix("base_model.model.").split(".lora_A.")[0]
        b = saved[key.replace(".lora_A.", ".lora_B.")]
        shape = base.get_submodule(path).weight.shape
        out[path] = scale * (b.double().flatten(1) @ a.double().flatten(1)).reshape(shape)
    return out


def saved_adapter(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    return load_file(str(folder / "adapter_model.safetensors")), config


def weight_l2(result) -> dict[str, float]:
    return {v.layer: float(v.scalars["l2"]) for v in result.values if v.metric == "weight_l2"}


def layer_l2(deltas: dict[str, torch.Tensor], layer: str) -> float:
    return math.sqrt(sum(float(d.norm()) ** 2 for p, d in deltas.items() if p == layer or p.startswith(layer + ".")))


@pytest.fixture(scope="module")
def tv_adapter(tmp_path_factory):
    """A torchvision resnet18 base saved with ftprobe.save, a rsLoRA adapter on its convolutions, fc trained in full,
    written five ways: the adapter folder (safetensors and .bin), torch.save and safetensors of the unmerged
    PeftModel.state_dict(), and safetensors of get_peft_model_state_dict (the adapter's tensors only)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tv")
    base = resnet(0)
    ftprobe.save(base, root / "base.safetensors", arch="torchvision:resnet18", num_classes=5)
    model = lora(base, "fc", r=4, lora_alpha=8, use_rslora=True, target_modules=CONV_TARGETS)
    model.save_pretrained(root / "adapter")
    model.save_pretrained(root / "adapter_bin", safe_serialization=False)  # adapter_model.bin
    (root / "sd").mkdir()
    torch.save(model.state_dict(), root / "sd" / "lora.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "sd" / "lora.safetensors"))
    save_file(peft.get_peft_model_state_dict(model), str(root / "sd" / "adapter_only.safetensors"))  # no base weights
    model.peft_config["default"].save_pretrained(str(root / "sd"))  # the scale a state dict does not record
    return root, base, model


@pytest.mark.parametrize("which", ["adapter", "adapter_bin", "sd/lora.pt", "sd/lora.safetensors",
                                   "sd/adapter_only.safetensors"])
def test_conv_rslora_adapter_delta_is_scale_b_a(tv_adapter, which):
    root, base, model = tv_adapter
    lm = load_model(root / which, base=load_model(root / "base.safetensors"))
    assert lm.kind == "peft" and type(lm.module) is type(base)
    assert lm.format == ("PEFT adapter folder" if which.startswith("adapter") else "PEFT LoRA state dict")
    assert [n for n, _ in lm.module.named_modules()] == [n for n, _ in base.named_modules()]  # base's names
    assert "r=4, lora_alpha=8, rslora=True" in lm.notes[0] and "scale 4 " in lm.notes[0]  # 8 / sqrt(4)
    assert "merge_and_unload" in lm.notes[0] and "modules_to_save (trained in full): fc" in lm.notes[0]
    saved, config = saved_adapter(root / "adapter")
    deltas = lora_deltas(saved, config, base)
    assert {"conv1", "layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv2"} <= set(deltas)
    tuned = dict(lm.module.named_modules())
    for name, mod in base.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        change = (tuned[name].weight - mod.weight).detach().double()
        if name in deltas:
            torch.testing.assert_close(change, deltas[name], atol=1e-6, rtol=0)
            assert float(deltas[name].norm()) > 0.01
        elif name == "fc":
            trained = model.base_model.model.fc.modules_to_save["default"].weight
            assert torch.equal(tuned["fc"].weight, trained)
        else:
            assert torch.equal(change, torch.zeros_like(change)), name


def test_weight_l2_measures_the_adapter_delta_and_the_trained_head(tv_adapter):
    root, base, model = tv_adapter
    saved, config = saved_adapter(root / "adapter")
    deltas = lora_deltas(saved, config, base)
    deltas["fc"] = (model.base_model.model.fc.modules_to_save["default"].weight - base.fc.weight).detach().double()
    result = ftprobe.compare(root / "base.safetensors", root / "adapter", metrics="weight_l2",
                             layers=["conv1", "layer1", "layer2", "layer3", "fc"], device="cpu")
    got = weight_l2(result)
    for layer in ("conv1", "layer1", "layer2", "fc"):
        assert got[layer] == pytest.approx(layer_l2(deltas, layer), rel=1e-6)
        assert got[layer] > 0
    assert got["layer3"] == pytest.approx(layer_l2(deltas, "layer3"), abs=1e-6)  # conv1 of layer3's blocks only
    assert result.models[1]["kind"] == "peft"


def test_activations_are_the_adapted_models(tv_adapter):
    """The merged model computes what peft's unmerged PeftModel computes: its forward is the adapted model's."""
    root, _, model = tv_adapter
    lm = load_model(root / "adapter", base=load_model(root / "base.safetensors"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = lm.module.eval()(x)
        torch.testing.assert_close(out, model(x), atol=1e-4 * float(out.abs().max()), rtol=1e-5)


def test_cli_compare_takes_an_adapter_as_the_tuned_model(tv_adapter, run_cli):
    root, base, _ = tv_adapter
    saved, config = saved_adapter(root / "adapter")
    deltas = lora_deltas(saved, config, base)
    code, out, err = run_cli("compare", root / "base.safetensors", root / "adapter", "--metrics", "weight_l2",
                             "--layers", "layer1", "--json", "-", "--device", "cpu")
    assert code == 0, err
    [value] = [v["scalars"]["l2"] for v in json.loads(out)["values"]]
    assert value == pytest.approx(layer_l2(deltas, "layer1"), rel=1e-6)
    from ftprobe.report import validate_results

    validate_results(json.loads(out))
    tuned = json.loads(out)["models"][1]
    assert (tuned["kind"], tuned["format"], tuned["arch"]) == ("peft", "PEFT adapter folder", "torchvision:resnet18")


def test_adapter_without_a_base_asks_for_it(tv_adapter, run_cli):
    root, _, _ = tv_adapter
    with pytest.raises(CheckpointError, match=r"PEFT LoRA adapter.*names no base.*torchvision\.models\.resnet\.ResNet"
                                              r".*ftprobe compare BASE ADAPTER"):
        load_model(root / "adapter")
    code, _, err = run_cli("layers", root / "adapter")
    assert code == 1 and "Pass the base it was trained on" in err and "Traceback" not in err


def test_state_dict_without_its_config_says_where_the_scale_comes_from(tv_adapter, tmp_path):
    root, base, _ = tv_adapter
    (tmp_path / "lora.pt").write_bytes((root / "sd" / "lora.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"does not record the adapter's scale.*adapter_config\.json.*"
                                              r"save_pretrained") as info:
        load_model(tmp_path / "lora.pt", base=base)
    assert "--arch" not in str(info.value)


def test_state_dict_trained_on_other_base_weights_does_not_fit(tv_adapter):
    root, _, _ = tv_adapter
    with pytest.raises(CheckpointError) as info:
        load_model(root / "sd" / "lora.pt", base=resnet(seed=7))
    msg = str(info.value)
    assert "does not fit this base" in msg and "frozen copy of 'conv1.weight' differs" in msg
    assert "Pass the base it was trained on" in msg and "--arch" not in msg


def test_adapter_on_a_timm_base(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    base = timm.create_model("test_resnet", num_classes=5).eval()
    ftprobe.save(base, tmp_path / "base.pt", arch="timm:test_resnet", num_classes=5)
    model = lora(base, "fc", r=2, lora_alpha=6, target_modules=["layer1.0.conv1", "layer2.0.conv2", "conv1.0"])
    model.save_pretrained(tmp_path / "adapter")
    saved, config = saved_adapter(tmp_path / "adapter")
    deltas = lora_deltas(saved, config, base)
    assert {"layer1.0.conv1", "layer2.0.conv2", "conv1.0"} <= set(deltas)
    result = ftprobe.compare(tmp_path / "base.pt", tmp_path / "adapter", metrics="weight_l2",
                             layers=["conv1", "layer1", "layer2"], device="cpu")
    for layer, value in weight_l2(result).items():
        assert value == pytest.approx(layer_l2(deltas, layer), rel=1e-6) and value > 0
    assert "rslora=False" in result.models[1]["notes"][0] and "scale 3 " in result.models[1]["notes"][0]


@pytest.fixture(scope="module")
def vit_adapter(tmp_path_factory):
    """A transformers ViT folder, and a LoRA adapter on its attention projections trained from it (so the adapter
    config names the folder as its base), classifier in modules_to_save."""
    root = tmp_path_factory.mktemp("vit")
    tiny_vit(0).save_pretrained(root / "base")
    base = transformers.ViTForImageClassification.from_pretrained(str(root / "base")).eval()
    model = lora(base, "classifier", r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    model.save_pretrained(root / "adapter")
    return root, base, model


def test_adapter_on_a_transformers_base_through_the_cli(vit_adapter, run_cli):
    root, base, _ = vit_adapter
    saved, config = saved_adapter(root / "adapter")
    assert config["base_model_name_or_path"] == str(root / "base")
    deltas = lora_deltas(saved, config, base)
    code, out, err = run_cli("compare", root / "base", root / "adapter", "--metrics", "weight_l2", "--json", "-",
                             "--device", "cpu")
    assert code == 0, err
    values = {v["layer"]: v["scalars"]["l2"] for v in json.loads(out)["values"]}
    assert list(values) == ["vit.layers.0", "vit.layers.1"]  # the encoder blocks, as for the base
    for layer, value in values.items():
        assert value == pytest.approx(layer_l2(deltas, layer), rel=1e-6) and value > 0
    code, out, err = run_cli("layers", root / "adapter")  # the base comes from adapter_config.json
    assert code == 0, err
    assert "vit.layers.1.attention.q_proj" in out and "lora" not in out and "base_layer" not in out


def test_adapter_finds_the_base_its_config_names(vit_adapter):
    root, base, model = vit_adapter
    lm = load_model(root / "adapter")
    assert any("named in adapter_config.json" in n for n in lm.notes)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lm.module.eval()(x).logits, model(x).logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(lm.module.classifier.weight, model.base_model.model.classifier.modules_to_save["default"].weight)


def _misfit(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "does not fit this base" in msg and "Pass the base it was trained on" in msg, msg
    assert "--arch" not in msg and "Traceback" not in msg
    return msg


def test_adapter_for_another_base_name_does_not_fit(vit_adapter, tmp_path):
    root, _, _ = vit_adapter
    tiny_vit(5).save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError) as info:
        load_model(root / "adapter", base=load_model(tmp_path / "other"))
    msg = _misfit(info)
    assert f"trained on {str(root / 'base')!r}" in msg and "base_model_name_or_path" in msg


def test_adapter_whose_target_modules_the_base_lacks_does_not_fit(vit_adapter, tv_adapter):
    root, _, _ = vit_adapter
    with pytest.raises(CheckpointError) as info:
        load_model(tv_adapter[0] / "adapter", base=load_model(root / "base"))
    msg = _misfit(info)
    assert "not found in the base model" in msg and "torchvision.models.resnet.ResNet" in msg


@pytest.mark.parametrize("overrides, words", [
    ({"hidden_size": 48}, "module 'classifier': the adapter's classifier.weight has shape (3, 32), this base needs "
                          "(3, 48)"),
    ({"num_hidden_layers": 3}, "module 'vit.layers.2.attention.q_proj' of the base matches the adapter's target "
                               "modules, but the adapter holds no weights for it"),
    ({"num_hidden_layers": 1}, "it adapts module 'vit.layers.1.attention.q_proj', which the base does not have"),
])
def test_adapter_whose_modules_or_shapes_differ_does_not_fit(vit_adapter, overrides, words):
    root, _, _ = vit_adapter
    other = tiny_vit(0, **overrides)  # a module object: no name to check, so the shapes and modules are
    with pytest.raises(CheckpointError) as info:
        load_model(root / "adapter", base=other)
    assert words in _misfit(info)


def test_other_adapter_types_say_how_to_compare_them(vit_adapter, tmp_path):
    root, base, _ = vit_adapter
    ia3 = peft.get_peft_model(copy.deepcopy(base), peft.IA3Config(target_modules=["q_proj"], feedforward_modules=[]))
    ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(CheckpointError, match=r"PEFT IA3 adapter; ftprobe compares LoRA adapters.*merge_and_unload"):
        load_model(tmp_path / "ia3", base=base)


def test_the_base_name_matches_a_folder_or_a_cached_snapshot_of_it(tmp_path, monkeypatch):
    from ftprobe.core._peft import _same

    monkeypatch.chdir(tmp_path)
    (tmp_path / "vit").mkdir()
    assert _same("vit", [str(tmp_path / "vit")])  # a relative path, as the training script gave it
    assert _same("google/vit-base", ["/cache/hub/models--google--vit-base/snapshots/abc123"])
    assert not _same("google/vit-base", ["/cache/hub/models--google--vit-large/snapshots/abc123"])
    assert not _same("vit", [str(tmp_path / "other")])
