"""Hugging Face transformers models as ftprobe models: folders written by transformers' own saving code
(``save_pretrained``, sharded, ``Trainer.save_model``, Trainer ``checkpoint-N``), hub names, default layers and input
size from the config. Every model is a tiny, randomly initialised one."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import ftprobe
from ftprobe.core.errors import CheckpointError
from ftprobe.core.layers import default_input_size, list_layers, natural_layers, probe
from ftprobe.core.loading import load_model

transformers = pytest.importorskip("transformers")

VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8, num_labels=3)


def tiny_vit(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return transformers.ViTForImageClassification(transformers.ViTConfig(**{**VIT, **overrides})).eval()


def tiny_convnext(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32, num_labels=3)
    return transformers.ConvNextForImageClassification(cfg).eval()


def tiny_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                                    num_labels=3)
    return transformers.ResNetForImageClassification(cfg).eval()


def nudged(model: nn.Module, scale: float = 0.05, seed: int = 1) -> nn.Module:
    """A copy with every parameter moved by seeded noise: a stand-in for a fine-tune, known in memory."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return out


def expected_l2(base: nn.Module, tuned: nn.Module, layer: str) -> float:
    """‖ΔW‖ over the conv / linear weights inside ``layer``, from the in-memory models."""
    mods_t = dict(tuned.get_submodule(layer).named_modules())
    total = 0.0
    for name, mod in base.get_submodule(layer).named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            total += float(torch.linalg.vector_norm((mods_t[name].weight - mod.weight).detach().double())) ** 2
    return math.sqrt(total)


def weight_l2(result) -> dict[str, float]:
    return {v.layer: float(v.scalars["l2"]) for v in result.values if v.metric == "weight_l2"}


def assert_state_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def vit_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    base, tuned = tiny_vit(0), None
    tuned = nudged(base)
    base.save_pretrained(root / "base")
    tuned.save_pretrained(root / "tuned")
    return root, base, tuned


@pytest.mark.parametrize("how", ["safetensors", "safe_serialization=False", "sharded"])
def test_save_pretrained_folder_loads_offline_and_weight_l2_matches(vit_pair, tmp_path, how):
    root, base, tuned = vit_pair
    folder = tmp_path / "tuned"
    kwargs = {"safetensors": {}, "safe_serialization=False": {"safe_serialization": False},
              "sharded": {"max_shard_size": "20KB"}}[how]
    tuned.save_pretrained(folder, **kwargs)
    if how == "sharded":
        shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
        assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    lm = load_model(folder)
    assert (lm.kind, lm.label, lm.arch) == ("transformers", "tuned", "transformers:ViTForImageClassification")
    assert lm.format == "transformers save_pretrained folder" + (" (sharded)" if how == "sharded" else "")
    assert type(lm.module) is transformers.ViTForImageClassification
    assert "ViTForImageClassification" in lm.notes[0] and "local_files_only" in lm.notes[0]
    assert lm.sha256 is not None and len(lm.sha256) == 64
    if how == "sharded":
        assert any("model.safetensors.index.json" in n for n in lm.notes)
    assert_state_equal(lm.module, tuned)
    result = ftprobe.compare(root / "base", folder, metrics="weight_l2", device="cpu")
    got = weight_l2(result)
    assert list(got) == ["vit.layers.0", "vit.layers.1"]  # the encoder blocks, by default
    for layer, value in got.items():
        assert value == pytest.approx(expected_l2(base, tuned, layer), rel=1e-6)
        assert value > 0


def test_module_names_are_the_loaded_models(vit_pair):
    root, base, _ = vit_pair
    lm = load_model(root / "base", arch="torchvision:resnet18")  # --arch once for all models reaches folders too
    assert lm.notes[-1] == "arch 'torchvision:resnet18' is ignored: its config.json names its class."
    assert [n for n, _ in lm.module.named_modules()] == [n for n, _ in base.named_modules()]
    assert lm.describe()["kind"] == "transformers" and lm.describe()["module_class"] == "ViTForImageClassification"


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory):
    """Two Trainer steps with save_steps=1 on eight seeded images: checkpoint-1, checkpoint-2 and save_model."""
    root = tmp_path_factory.mktemp("trainer")
    model = tiny_vit(0)
    base = copy.deepcopy(model)

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict:
            gen = torch.Generator().manual_seed(i)
            return {"pixel_values": torch.randn(3, 32, 32, generator=gen), "labels": i % 3}

    args = transformers.TrainingArguments(
        output_dir=str(root / "out"), max_steps=2, save_steps=1, save_strategy="steps", per_device_train_batch_size=4,
        learning_rate=1e-2, report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Images())
    trainer.train()
    trainer.save_model(str(root / "final"))
    base.save_pretrained(root / "base")
    return root, base, trainer.model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["final", "out/checkpoint-2"])
def test_trainer_folders_load_and_weight_l2_matches(trainer_run, which):
    root, base, trained = trainer_run
    folder = root / which
    assert (folder / "training_args.bin").is_file()
    if which != "final":
        assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {p.name for p in folder.iterdir()}
    lm = load_model(folder)
    assert lm.kind == "transformers"
    assert lm.format == ("Trainer.save_model folder" if which == "final" else "Trainer checkpoint folder")
    assert_state_equal(lm.module, trained)  # the last checkpoint holds the trained weights
    ignored = next(n for n in lm.notes if n.startswith("not model weights"))
    assert "training_args.bin" in ignored
    result = ftprobe.compare(root / "base", folder, metrics="weight_l2", device="cpu")
    for layer, value in weight_l2(result).items():
        assert value == pytest.approx(expected_l2(base, trained, layer), rel=1e-6)
        assert value > 0


@pytest.mark.slow
def test_trainer_output_folder_points_at_its_checkpoints(trainer_run, run_cli):
    root, _, _ = trainer_run
    with pytest.raises(CheckpointError, match=r"Trainer output folder.*checkpoint-1, checkpoint-2.*checkpoint-2"):
        load_model(root / "out")
    code, _, err = run_cli("layers", root / "out")
    assert code == 1 and "checkpoint-2" in err and "Traceback" not in err


def test_cli_layers_and_compare_take_folders(vit_pair, run_cli):
    root, base, tuned = vit_pair
    code, out, err = run_cli("layers", root / "base")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "vit.layers.0 " in line or "vit.layers.1 " in line]
    assert len(lines) == 2 and all("default" in line for line in lines)
    assert "17×32" in lines[0]  # (1 + (32/8)²) tokens of width 32: the probe used the config's image_size
    code, out, err = run_cli("compare", root / "base", root / "tuned", "--metrics", "weight_l2", "--json", "-",
                             "--device", "cpu")
    assert code == 0, err
    values = {v["layer"]: v["scalars"]["l2"] for v in json.loads(out)["values"]}
    assert set(values) == {"vit.layers.0", "vit.layers.1"}
    for layer, value in values.items():
        assert value == pytest.approx(expected_l2(base, tuned, layer), rel=1e-6)
    models = json.loads(out)["models"]
    assert [m["kind"] for m in models] == ["transformers", "transformers"]
    from ftprobe.report import validate_results

    validate_results(json.loads(out))  # the new kinds are in the results schema


def test_activation_metrics_use_the_config_input_size(vit_pair, image_folder):
    """The data is resized to the config's image_size (32), not 224, which this ViT would refuse."""
    root, _, _ = vit_pair
    result = ftprobe.compare(root / "base", root / "tuned", data=image_folder, metrics="cka", device="cpu",
                             batch_size=6)
    cka = {v.layer: float(v.scalars["cka"]) for v in result.values if "cka" in v.scalars}
    assert set(cka) == {"vit.layers.0", "vit.layers.1"}
    assert all(0.0 < c <= 1.0 + 1e-9 for c in cka.values())
    same = ftprobe.compare(root / "base", root / "base", data=image_folder, metrics="cka", device="cpu",
                           batch_size=6)
    same_cka = [float(v.scalars["cka"]) for v in same.values if "cka" in v.scalars]
    assert len(same_cka) == 2 and all(c == pytest.approx(1.0, abs=1e-6) for c in same_cka)


@pytest.mark.parametrize("make, blocks", [
    (tiny_convnext, ["convnext.encoder.stages.0", "convnext.encoder.stages.1"]),
    (tiny_resnet, ["resnet.encoder.stages.0", "resnet.encoder.stages.1"]),
])
def test_cnn_folders_default_to_their_stages(tmp_path, make, blocks):
    base = make(0)
    tuned = nudged(base)
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    lm = load_model(tmp_path / "base")
    assert natural_layers(lm.module, probe(lm.module)) == blocks
    got = weight_l2(ftprobe.compare(tmp_path / "base", tmp_path / "tuned", metrics="weight_l2", device="cpu"))
    assert list(got) == blocks
    for layer, value in got.items():
        assert value == pytest.approx(expected_l2(base, tuned, layer), rel=1e-6) and value > 0


def test_input_size_and_channels_come_from_the_config():
    model = tiny_vit(0, image_size=16, num_channels=1)
    assert default_input_size(model) == 16
    shapes = {i.name: i.shape for i in list_layers(model)}
    assert shapes["vit.embeddings.patch_embeddings.projection"] == (32, 2, 2)  # 1 channel in, 16 px / 8 px patches
    assert shapes["vit.layers.0"] == (5, 32)


def test_hub_name_not_cached_offline_says_how_to_fix(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError) as info:
        load_model("hf:google/vit-base-patch16-224")
    msg = str(info.value)
    assert "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download google/vit-base-patch16-224" in msg and "save_pretrained(DIR)" in msg
    assert "--arch" not in msg


def test_hub_spec_uses_from_pretrained(monkeypatch, vit_pair):
    """``hf:NAME`` goes through transformers' own from_pretrained with the name (here answered from a local folder)."""
    root, base, _ = vit_pair
    asked = []
    real = transformers.AutoConfig.from_pretrained

    def from_cache(name, **kw):
        asked.append(name)
        return real(str(root / "base"), **kw)

    real_model = transformers.ViTForImageClassification.from_pretrained.__func__

    def model_from_cache(cls, name, **kw):
        asked.append(name)
        return real_model(cls, str(root / "base"), **kw)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_cache)
    monkeypatch.setattr(transformers.ViTForImageClassification, "from_pretrained", classmethod(model_from_cache))
    lm = load_model("hf:acme/tiny-vit")
    assert asked == ["acme/tiny-vit", "acme/tiny-vit"]
    assert (lm.kind, lm.source, lm.label) == ("transformers", "hf:acme/tiny-vit", "tiny-vit")
    assert_state_equal(lm.module, base)


def test_config_without_weights_says_what_is_missing(vit_pair, tmp_path):
    root, _, _ = vit_pair
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text((root / "base" / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"weights cannot be loaded.*model.safetensors.*save_pretrained"):
        load_model(folder)


def test_a_folder_that_is_not_a_transformers_model_is_left_to_the_other_loaders(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 3}))
    from ftprobe.core._hf import is_transformers_dir

    assert not is_transformers_dir(tmp_path)  # timm's hub folder config
    assert not is_transformers_dir(Path(__file__))


def test_cli_top_images_takes_folders_at_the_config_size(tmp_path, image_folder, run_cli):
    base = tiny_convnext(0)
    base.save_pretrained(tmp_path / "base")
    nudged(base).save_pretrained(tmp_path / "tuned")
    out = tmp_path / "grid.png"
    code, _, err = run_cli("top-images", tmp_path / "base", tmp_path / "tuned", "--layer", "convnext.encoder.stages.0",
                           "--channels", "0,1", "--data", image_folder, "--k", "3", "--show", "2", "--out", out,
                           "--device", "cpu", "--json", tmp_path / "results.json")
    assert code == 0, err
    assert out.stat().st_size > 0
    preprocess = json.loads((tmp_path / "results.json").read_text())["data"]["preprocess"]
    assert preprocess["size"] == 32  # the config's image_size, not the 224 of models without one


def test_a_layer_that_returns_a_model_output_is_captured(vit_pair, image_folder):
    """``vit`` (the ViTModel inside) returns a ModelOutput: its first tensor, last_hidden_state, is the activation."""
    root, base, _ = vit_pair
    with torch.no_grad():
        inner = base.vit(torch.zeros(1, 3, 32, 32))
    assert isinstance(inner, transformers.utils.ModelOutput)
    shapes = {i.name: i.shape for i in list_layers(load_model(root / "base").module)}
    assert shapes["vit"] == tuple(inner.last_hidden_state.shape[1:]) == (17, 32)
    assert shapes["classifier"] == (3,)  # the logits
    result = ftprobe.compare(root / "base", root / "tuned", layers=["vit", "classifier"], data=image_folder,
                             metrics="cka", device="cpu", batch_size=6)
    cka = {v.layer: float(v.scalars["cka"]) for v in result.values if "cka" in v.scalars}
    assert set(cka) == {"vit", "classifier"} and all(0.0 < c <= 1.0 + 1e-9 for c in cka.values())


def test_a_model_type_transformers_does_not_know_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit-from-the-future", "architectures": ["X"]}))
    with pytest.raises(CheckpointError, match=r"not a config this transformers .* can read.*Upgrade transformers"):
        load_model(tmp_path)


def test_convnext_block_internals_are_read_channels_last():
    """Inside a transformers ConvNeXt block the layer norm and activation see (N, H, W, C); the block output is
    channels-first again."""
    from ftprobe.core.layers import module_layout
    from ftprobe.core.views import num_channels

    torch.manual_seed(0)
    cfg = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=48, num_labels=3)
    model = transformers.ConvNextForImageClassification(cfg).eval()
    infos = {i.name: i for i in list_layers(model)}
    block = "convnext.encoder.stages.0.layers.0"
    for name, channels in (("layernorm", 8), ("act", 32), ("pwconv2", 8)):
        info = infos[f"{block}.{name}"]
        layout = module_layout(model, info.name, shape=info.shape)
        assert (layout, num_channels(info.shape, layout)) == ("nhwc", channels), name
    assert infos[block].shape == (8, 12, 12) and module_layout(model, block, shape=(8, 12, 12)) == "auto"
