"""Loading models from modules, specs and files; saving state dicts with their architecture (random init only)."""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ftprobe.core.errors import CheckpointError, FtprobeError
from ftprobe.core.loading import LoadedModel, build_arch, load_model, parse_spec, save_model

RESNET = "torchvision:resnet18"


def _seeded_resnet(num_classes: int = 1000) -> nn.Module:
    torch.manual_seed(123)
    return torchvision.models.resnet18(num_classes=num_classes)


def _with_head(sd: dict[str, torch.Tensor], num_classes: int, modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A copy of ``sd`` whose classification layers keep only their first ``num_classes`` outputs."""
    keys = {f"{m}.{p}" for m in modules for p in ("weight", "bias")}
    return {k: v[:num_classes].clone() if k in keys else v for k, v in sd.items()}


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Settings:
    """A user's class stored in a checkpoint: not on the plain-data allowlist."""

    def __init__(self) -> None:
        self.lr = 0.1


def _write_marker(path: str) -> None:
    """What a malicious pickle would run: it leaves a file behind."""
    Path(path).write_text("pwned")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (_write_marker, (self.marker,))


@pytest.fixture(scope="module")
def resnet_sd() -> dict[str, torch.Tensor]:
    return _seeded_resnet().state_dict()


@pytest.fixture(scope="module")
def googlenet_sd() -> dict[str, torch.Tensor]:
    """Random-init googlenet with its auxiliary heads, as torchvision builds it without weights (cheap init)."""
    torch.manual_seed(7)
    return torchvision.models.googlenet(init_weights=False).state_dict()


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory, resnet_sd: dict[str, torch.Tensor]) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "resnet.pt"
    torch.save(resnet_sd, path)
    return path


# --- specs -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("torchvision:resnet18", ("torchvision", "resnet18", None)),
        ("torchvision:googlenet:IMAGENET1K_V1", ("torchvision", "googlenet", "IMAGENET1K_V1")),
        ("TorchVision:resnet18", ("torchvision", "resnet18", None)),
        ("timm:resnet18", ("timm", "resnet18", None)),
        ("timm:resnet18.a1_in1k:pretrained", ("timm", "resnet18.a1_in1k", "pretrained")),
        ("timm:hf-hub:timm/resnet18.a1_in1k", ("timm", "hf-hub:timm/resnet18.a1_in1k", None)),
        ("checkpoints/tuned.pt", None),
        ("C:\\models\\tuned.pt", None),
        ("resnet18", None),
    ],
    ids=["tv", "tv-weights", "tv-uppercase-prefix", "timm", "timm-pretrained", "timm-hub", "path", "windows", "bare"],
)
def test_parse_spec(text: str, expected: tuple | None) -> None:
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text", ["torchvision:", "torchvision:resnet18:V1:extra", "timm:resnet18:yes"])
def test_parse_spec_rejects_malformed_specs(text: str) -> None:
    with pytest.raises(CheckpointError, match="(?i)spec"):
        parse_spec(text)


def test_an_existing_file_named_like_a_spec_is_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resnet_sd: dict[str, torch.Tensor]
) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save(resnet_sd, "torchvision:resnet18")
    assert parse_spec("torchvision:resnet18") is None
    lm = load_model("torchvision:resnet18", arch=RESNET)
    assert lm.kind == "state_dict" and lm.source == str(tmp_path / "torchvision:resnet18")


def test_torchvision_spec_builds_the_model_at_random_init() -> None:
    lm = load_model("torchvision:resnet18", map_location="cpu")
    assert isinstance(lm.module, torchvision.models.ResNet)
    assert (lm.kind, lm.label, lm.source, lm.arch) == ("spec", "resnet18", RESNET, RESNET)
    assert (lm.sha256, lm.head, lm.weights) == (None, None, "random")
    assert len(lm.notes) == 1 and "random weights" in lm.notes[0]


def test_spec_with_weights_calls_the_real_downloader(monkeypatch: pytest.MonkeyPatch) -> None:
    urls: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        urls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="Cannot fetch the weights of torchvision:resnet18:IMAGENET1K_V1"):
        load_model("torchvision:resnet18:IMAGENET1K_V1")
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]


def test_unknown_torchvision_name_suggests_close_matches() -> None:
    with pytest.raises(CheckpointError, match=r"Unknown torchvision model 'resnt18'\. Did you mean: resnet18"):
        load_model("torchvision:resnt18")


def test_unknown_weights_name_lists_the_available_ones() -> None:
    with pytest.raises(CheckpointError, match=r"Did you mean: IMAGENET1K_V1\? Available: IMAGENET1K_V1, DEFAULT"):
        build_arch("torchvision:resnet18:IMAGENET1K")


def test_timm_spec_builds_a_timm_model() -> None:
    import timm

    lm = load_model("timm:resnet18")
    assert isinstance(lm.module, timm.models.ResNet)
    assert (lm.kind, lm.label, lm.arch) == ("spec", "resnet18", "timm:resnet18")


def test_unknown_timm_name_suggests_close_matches() -> None:
    with pytest.raises(CheckpointError, match="Did you mean: resnet18"):
        load_model("timm:resnt18")


def test_missing_timm_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(FtprobeError, match=r"pip install 'ftprobe\[timm\]'"):
        load_model("timm:resnet18")


# --- state dicts -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"module": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    ],
    ids=["bare", "under-state_dict", "under-model", "under-module", "ddp-prefix", "ddp-and-compile-prefix"],
)
def test_state_dict_round_trip_with_arch(
    tmp_path: Path, resnet_sd: dict[str, torch.Tensor], wrap: object
) -> None:
    path = tmp_path / "tuned.pth"
    torch.save(wrap(resnet_sd), path)  # type: ignore[operator]
    lm = load_model(path, arch=RESNET, label="tuned")
    assert (lm.kind, lm.label, lm.arch, lm.head) == ("state_dict", "tuned", RESNET, None)
    _assert_same_tensors(lm.module.state_dict(), resnet_sd)
    assert lm.source == str(path.resolve())


def test_prefix_stripping_and_entry_are_noted(tmp_path: Path, resnet_sd: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet_sd.items()}, "epoch": 1}, path)
    notes = " ".join(load_model(path, arch=RESNET).notes)
    assert "'module.'" in notes and "'state_dict' entry" in notes and "epoch" in notes


def test_state_dict_without_arch_says_to_pass_arch(resnet_file: Path) -> None:
    with pytest.raises(CheckpointError, match="--arch torchvision:NAME or --arch timm:NAME"):
        load_model(resnet_file)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_model_round_trip_needs_no_arch(tmp_path: Path, resnet_sd: dict[str, torch.Tensor], suffix: str) -> None:
    sd = _with_head(resnet_sd, 5, ("fc",))
    written = save_model(sd, tmp_path / "sub" / f"tuned{suffix}", arch=RESNET, num_classes=5)
    lm = load_model(written)
    assert lm.kind == ("safetensors" if suffix == ".safetensors" else "state_dict")
    assert (lm.arch, lm.arch_kwargs, lm.head) == (RESNET, {"num_classes": 5}, None)
    _assert_same_tensors(lm.module.state_dict(), sd)


def test_save_model_accepts_a_module(tmp_path: Path) -> None:
    model = _seeded_resnet()
    lm = load_model(save_model(model, tmp_path / "m.safetensors", arch=RESNET))
    _assert_same_tensors(lm.module.state_dict(), model.state_dict())


def test_save_model_pt_is_weights_only_loadable(tmp_path: Path, resnet_sd: dict[str, torch.Tensor]) -> None:
    path = save_model(resnet_sd, tmp_path / "m.pt", arch=RESNET)
    raw = torch.load(path, weights_only=True)
    assert raw["ftprobe"] == {"arch": RESNET, "arch_kwargs": {}, "format": 1}


def test_save_model_refuses_a_state_dict_of_another_architecture(
    tmp_path: Path, resnet_sd: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(CheckpointError, match="does not fit the architecture torchvision:resnet34"):
        save_model(resnet_sd, tmp_path / "m.pt", arch="torchvision:resnet34")
    assert not (tmp_path / "m.pt").exists()


def test_timm_state_dict_round_trip(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(3)
    model = timm.create_model("resnet18", num_classes=4)
    lm = load_model(save_model(model, tmp_path / "t.safetensors", arch="timm:resnet18"))
    assert lm.head is not None and (lm.head["module"], lm.head["num_classes"]) == ("fc", 4)
    _assert_same_tensors(lm.module.state_dict(), model.state_dict())


def test_model_with_non_persistent_buffers_gives_the_same_outputs(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(5)
    model = timm.create_model("test_vit_relpos").eval()  # relative-position index: a buffer no state dict holds
    assert any(name not in model.state_dict() for name, _ in model.named_buffers())
    lm = load_model(save_model(model, tmp_path / "relpos.pt", arch="timm:test_vit_relpos"))
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        torch.testing.assert_close(lm.module.eval()(x), model(x), rtol=0, atol=0)


def test_replaced_head_is_recognised_and_reported(tmp_path: Path) -> None:
    model = _seeded_resnet(num_classes=7)
    path = tmp_path / "seven.pt"
    torch.save(model.state_dict(), path)
    assert model.fc.weight.shape == (7, 512)
    lm = load_model(path, arch=RESNET)
    assert lm.head == {"module": "fc", "modules": ["fc"], "num_classes": 7, "base_num_classes": 1000}
    assert lm.module.fc.out_features == 7 and lm.arch_kwargs == {"num_classes": 7}
    assert any("7 classes" in n for n in lm.notes)
    _assert_same_tensors(lm.module.state_dict(), model.state_dict())


def test_googlenet_state_dict_without_aux_heads_loads(tmp_path: Path, googlenet_sd: dict[str, torch.Tensor]) -> None:
    sd = {k: v for k, v in googlenet_sd.items() if not k.startswith(("aux1.", "aux2."))}
    path = tmp_path / "g.pt"
    torch.save(sd, path)
    lm = load_model(path, arch="torchvision:googlenet")
    assert lm.module.aux1 is None and lm.module.aux2 is None
    assert lm.arch_kwargs == {"aux_logits": False} and lm.module.transform_input is False
    assert any("no auxiliary heads" in n for n in lm.notes)
    assert any("IMAGENET1K_V1" in n and "transform_input" in n for n in lm.notes)
    _assert_same_tensors(lm.module.state_dict(), sd)


def test_googlenet_aux_heads_are_dropped_when_the_architecture_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, googlenet_sd: dict[str, torch.Tensor]
) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a state dict must not trigger a download")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    path = tmp_path / "g.pt"
    torch.save(googlenet_sd, path)
    # configured as torchvision configures its pretrained googlenet: transform_input=True, no aux heads
    lm = load_model(path, arch="torchvision:googlenet:IMAGENET1K_V1")
    assert lm.module.aux1 is None and lm.module.transform_input is True
    assert any("Dropped the checkpoint's auxiliary heads (aux1, aux2)" in n for n in lm.notes)
    expected = {k: v for k, v in googlenet_sd.items() if not k.startswith("aux")}
    _assert_same_tensors(lm.module.state_dict(), expected)


def test_googlenet_head_with_aux_heads_is_recognised(tmp_path: Path, googlenet_sd: dict[str, torch.Tensor]) -> None:
    sd = _with_head(googlenet_sd, 3, ("fc", "aux1.fc2", "aux2.fc2"))
    lm = load_model(save_model(sd, tmp_path / "g3.pt", arch="torchvision:googlenet"))
    expected_head = {"module": "fc", "modules": ["aux1.fc2", "aux2.fc2", "fc"], "num_classes": 3}
    assert lm.head == {**expected_head, "base_num_classes": 1000}
    assert lm.module.fc.out_features == 3 and lm.module.aux1.fc2.out_features == 3
    _assert_same_tensors(lm.module.state_dict(), sd)


def test_state_dict_of_another_architecture_lists_keys(resnet_file: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_model(resnet_file, arch="torchvision:alexnet")
    msg = str(info.value)
    assert "keys the model has but the checkpoint lacks (16): features.0.weight" in msg
    assert "keys in the checkpoint the model does not have (122): conv1.weight" in msg
    assert "(112 more)" in msg and "--arch" in msg


def test_shape_mismatch_is_listed(tmp_path: Path, resnet_sd: dict[str, torch.Tensor]) -> None:
    sd = dict(resnet_sd)
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"conv1\.weight: checkpoint \(64, 3, 3, 3\) vs model \(64, 3, 7, 7\)"):
        load_model(path, arch=RESNET)


# --- other formats and bad files -------------------------------------------------------------------------------------


def test_torchscript_archive_loads_its_weights_into_the_arch(tmp_path: Path) -> None:
    model = _seeded_resnet(num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "m.ts"))
    with pytest.raises(CheckpointError, match=r"TorchScript archive.*forward hooks.*--arch torchvision:NAME"):
        load_model(tmp_path / "m.ts")
    with pytest.raises(CheckpointError, match=r"TorchScript module.*nn.Module it was scripted from"):
        load_model(scripted)
    lm = load_model(tmp_path / "m.ts", arch=RESNET)
    assert (lm.kind, lm.label, lm.arch, lm.format) == ("torchscript", "m", RESNET, "TorchScript")
    assert isinstance(lm.module, torchvision.models.ResNet) and lm.head["num_classes"] == 7
    torch.testing.assert_close(lm.module.eval()(x), model(x), rtol=0, atol=0)


def test_sha256_is_recorded(resnet_file: Path) -> None:
    lm = load_model(resnet_file, arch=RESNET)
    assert lm.sha256 == hashlib.sha256(resnet_file.read_bytes()).hexdigest()
    described = lm.describe()
    assert json.loads(json.dumps(described)) == described
    assert described["sha256"] == lm.sha256 and described["module_class"] == "ResNet" and "module" not in described


def test_module_object_is_used_as_is() -> None:
    model = nn.Linear(2, 2)
    lm = load_model(model)
    assert isinstance(lm, LoadedModel) and lm.module is model
    assert (lm.kind, lm.label, lm.source, lm.sha256) == ("module", "Linear", "<module>", None)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="Checkpoint file not found"):
        load_model(tmp_path / "nope.pt", arch=RESNET)


@pytest.mark.parametrize("content", ["empty", "truncated", "text", "truncated-safetensors"])
def test_bad_files_are_not_checkpoints(tmp_path: Path, resnet_file: Path, content: str) -> None:
    path = tmp_path / ("bad.safetensors" if content == "truncated-safetensors" else "bad.pt")
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        data = resnet_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "text":
        path.write_text("epoch,loss\n1,0.5\n")
    else:
        save_model(torch.load(resnet_file, weights_only=True), tmp_path / "full.safetensors", arch=RESNET)
        data = (tmp_path / "full.safetensors").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"is not a PyTorch checkpoint \(.+\)"):
        load_model(path, arch=RESNET)


def test_pickled_module_is_refused_without_trust_and_loads_with_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert "torch.nn.modules.container.Sequential" in msg and "--trust-checkpoint" in msg
    assert "a pickled torch.nn.modules.container.Sequential" in msg and "checkpoint dict" not in msg
    assert "arbitrary code" in msg and "torch.save(model.state_dict(), path)" in msg and "--arch" in msg
    lm = load_model(path, trust=True)
    assert (lm.kind, lm.label) == ("pickle", "whole")
    _assert_same_tensors(lm.module.state_dict(), model.state_dict())


def test_malicious_pickle_runs_nothing_without_trust(tmp_path: Path) -> None:
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_Payload(armed)))  # the payload really writes its marker when unpickled
    assert armed.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model(path, arch=RESNET)
    assert not marker.exists()


def test_trusted_checkpoint_with_python_objects_gives_its_state_dict(
    tmp_path: Path, resnet_sd: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "with_args.pt"
    torch.save({"state_dict": resnet_sd, "args": argparse.Namespace(lr=0.1), "extra": _Settings()}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint dict .*of class [\w.]*test_loading\._Settings") as info:
        load_model(path, arch=RESNET)
    assert "argparse" not in str(info.value) and "pickled nn.Module" not in str(info.value)
    lm = load_model(path, arch=RESNET, trust=True)
    assert lm.kind == "state_dict" and any("Unpickled with trust" in n for n in lm.notes)
    _assert_same_tensors(lm.module.state_dict(), resnet_sd)


def test_misspelt_spec_prefix_is_pointed_out() -> None:
    with pytest.raises(CheckpointError, match="not found.*check the prefix"):
        load_model("torchvison:resnet18")
