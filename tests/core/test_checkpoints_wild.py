"""Checkpoints as training frameworks write them, each written by the framework's own saving code.

Every format is loaded through ``ftprobe.load_model`` and through the CLI, and ``weight_l2`` is checked against the
norm of the in-memory weight difference between the two models that were saved.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import ftprobe
from ftprobe.core.errors import CheckpointError
from ftprobe.core.loading import load_model
from ftprobe.report.schema import validate_results
from ftprobe.testing import perturbed_copy

timm = pytest.importorskip("timm")  # a test dependency (pyproject [test]): installed in CI, so this runs

RESNET = "torchvision:resnet18"
TIMM = "timm:test_resnet"


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def expected_l2(base: nn.Module, tuned: nn.Module, layer: str) -> float:
    """``‖W_tuned − W_base‖_F`` over the conv and linear weights inside ``layer`` (biases ignored), as weight_l2."""
    tuned_modules = dict(tuned.named_modules())
    total = 0.0
    for name, module in base.named_modules():
        if (name == layer or name.startswith(layer + ".")) and isinstance(module, (nn.Conv2d, nn.Linear)):
            diff = tuned_modules[name].weight.detach().double() - module.weight.detach().double()
            total += float(diff.pow(2).sum())
    assert total > 0, f"nothing changed inside {layer}: the test would prove nothing"
    return math.sqrt(total)


def cli_l2(run_cli: Any, tmp_path: Path, *args: object, layer: str = "layer1") -> tuple[float, Any]:
    """``ftprobe compare ARGS -m weight_l2 --layers LAYER``: the layer's l2 and the run (its notices on stderr)."""
    out = tmp_path / "cli.json"
    run = run_cli("compare", *args, "-m", "weight_l2", "--layers", layer, "--input-size", "32", "--json", out,
                  "--out", tmp_path / "cli-out")
    assert run.code == 0, run.err
    return ftprobe.Result.load(out).get("weight_l2", layer, "l2"), run


def api_l2(*models: object, layer: str = "layer1", **kwargs: Any) -> tuple[float, ftprobe.Result]:
    result = ftprobe.compare(*models, metrics="weight_l2", layers=[layer], input_size=32, **kwargs)
    return result.get("weight_l2", layer, "l2"), result


# --- 1. timm's train script: CheckpointSaver ------------------------------------------------------------------------


def _timm_saver_run(folder: Path, model: nn.Module, *, ema: bool, epoch: int = 3) -> dict[str, nn.Module]:
    """What timm's train.py does: a CheckpointSaver with the script's args, an EMA of the model, one step, a save.

    Returns the in-memory models: ``training`` (the weights saved as state_dict) and ``ema``.
    """
    from timm.utils import CheckpointSaver, ModelEmaV3

    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model_ema = ModelEmaV3(model, decay=0.5) if ema else None
    with torch.no_grad():  # a training step: the weights move, the EMA follows halfway
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if model_ema is not None:
        model_ema.update(model)
    folder.mkdir(parents=True, exist_ok=True)  # train.py makes its output folder (timm.utils.get_outdir)
    args = argparse.Namespace(model="test_resnet", num_classes=7, lr=0.1, epochs=10, model_ema=ema, output=str(folder))
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=model_ema, checkpoint_dir=str(folder),
                            recovery_dir=str(folder), max_history=2)
    saver.save_checkpoint(epoch, metric=0.5)
    return {"training": model, **({"ema": model_ema.module} if model_ema is not None else {})}


@pytest.fixture(scope="module")
def timm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    start = timm.create_model("test_resnet", num_classes=7)
    root = tmp_path_factory.mktemp("timm")
    base = _timm_saver_run(root / "base", start, ema=True)
    tuned = _timm_saver_run(root / "tuned", base["training"], ema=True)
    return {"root": root, "base": base, "tuned": tuned}


@pytest.mark.parametrize("name", ["last.pth.tar", "model_best.pth.tar", "checkpoint-3.pth.tar"])
def test_timm_checkpoint_saver_files_load_without_trust(timm_runs: dict[str, Any], name: str) -> None:
    path = timm_runs["root"] / "tuned" / name
    assert path.is_file(), sorted(os.listdir(path.parent))
    lm = load_model(path, arch=TIMM)
    assert _state_equal(lm.module, timm_runs["tuned"]["training"])
    assert (lm.kind, lm.format, lm.weights, lm.entry) == ("state_dict", "timm train script", "training", "state_dict")
    assert lm.label == name.removesuffix(".pth.tar")
    assert any("also holds EMA weights ('state_dict_ema')" in n and "--ema" in n for n in lm.notes), lm.notes
    described = lm.describe()
    assert (described["weights"], described["entry"]) == ("training", "state_dict")


def test_timm_ema_weights_are_selected_with_ema(timm_runs: dict[str, Any]) -> None:
    path = timm_runs["root"] / "tuned" / "model_best.pth.tar"
    lm = load_model(path, arch=TIMM, ema=True)
    assert _state_equal(lm.module, timm_runs["tuned"]["ema"])
    assert not _state_equal(lm.module, timm_runs["tuned"]["training"])
    assert (lm.weights, lm.entry) == ("ema", "state_dict_ema")
    assert lm.describe()["weights"] == "ema" and not any("also holds EMA" in n for n in lm.notes)
    assert _state_equal(load_model(path, arch=TIMM, ema=False).module, timm_runs["tuned"]["training"])


def test_timm_checkpoints_compare_by_api_and_cli(run_cli: Any, tmp_path: Path, timm_runs: dict[str, Any]) -> None:
    base, tuned = timm_runs["root"] / "base" / "last.pth.tar", timm_runs["root"] / "tuned" / "model_best.pth.tar"
    want = expected_l2(timm_runs["base"]["training"], timm_runs["tuned"]["training"], "layer1")
    got, result = api_l2(base, tuned, arch=TIMM)
    assert got == pytest.approx(want, rel=1e-9)
    assert [m["weights"] for m in result.models] == ["training", "training"]
    got, run = cli_l2(run_cli, tmp_path, base, tuned, "--arch", TIMM)
    assert got == pytest.approx(want, rel=1e-9) and "--ema" in run.err

    want_ema = expected_l2(timm_runs["base"]["ema"], timm_runs["tuned"]["ema"], "layer1")
    assert want_ema != pytest.approx(want)
    got, run = cli_l2(run_cli, tmp_path, base, tuned, "--arch", TIMM, "--ema")
    assert got == pytest.approx(want_ema, rel=1e-9)
    saved = json.loads((tmp_path / "cli.json").read_text())
    validate_results(saved)
    assert [(m["weights"], m["entry"]) for m in saved["models"]] == [("ema", "state_dict_ema")] * 2
    assert [m["format"] for m in saved["models"]] == ["timm train script"] * 2


@pytest.mark.slow
def test_top_images_takes_ema(run_cli: Any, tmp_path: Path, timm_runs: dict[str, Any], image_folder: Path) -> None:
    base, tuned = timm_runs["root"] / "base" / "last.pth.tar", timm_runs["root"] / "tuned" / "last.pth.tar"
    run = run_cli("top-images", base, tuned, "--layer", "layer1", "--channels", "0,1", "--data", image_folder,
                  "--arch", TIMM, "--ema", "--size", "32", "--k", "3", "--out", tmp_path / "grid.png",
                  "--json", tmp_path / "top.json")
    assert run.code == 0, run.err
    assert (tmp_path / "grid.png").stat().st_size > 0
    saved = json.loads((tmp_path / "top.json").read_text())
    assert [(m["weights"], m["entry"]) for m in saved["models"]] == [("ema", "state_dict_ema")] * 2


def test_ema_applies_to_checkpoint_files_and_folders_only(tmp_path: Path) -> None:
    from ftprobe.core.loading import is_checkpoint_source

    assert [is_checkpoint_source(s) for s in (RESNET, "timm:test_resnet", "hf:org/model", nn.Linear(1, 1))] == [
        False, False, False, False]
    assert [is_checkpoint_source(s) for s in (tmp_path, str(tmp_path / "x.pt"), f"local-dir:{tmp_path}")] == [
        True, True, True]


def test_timm_checkpoint_without_arch_suggests_the_model_its_args_name(timm_runs: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError, match=r"--arch timm:test_resnet is probably right"):
        load_model(timm_runs["root"] / "tuned" / "last.pth.tar")


def test_ema_on_a_checkpoint_without_an_ema_set_is_an_error(run_cli: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    runs = _timm_saver_run(tmp_path / "plain", timm.create_model("test_resnet", num_classes=7), ema=False)
    path = tmp_path / "plain" / "last.pth.tar"
    assert _state_equal(load_model(path, arch=TIMM).module, runs["training"])
    assert not any("EMA" in n for n in load_model(path, arch=TIMM).notes)
    with pytest.raises(CheckpointError, match=r"--ema .*holds no EMA set .*'state_dict_ema' or 'model_ema'"):
        load_model(path, arch=TIMM, ema=True)
    run = run_cli("layers", path, "--arch", TIMM, "--ema")
    assert run.code == 1 and "holds no EMA set" in run.err and "Traceback" not in run.err
    with pytest.raises(CheckpointError, match="has no EMA set"):
        load_model("torchvision:resnet18", ema=True)


def test_a_real_code_object_in_a_timm_checkpoint_still_needs_trust(tmp_path: Path) -> None:
    """The allowlist is for plain data: a function stored beside the weights is refused, described as what it is."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=7)
    path = tmp_path / "with_code.pth.tar"
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1), "hook": os.getcwd}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, arch=TIMM)
    msg = str(info.value)
    assert "checkpoint dict" in msg and "posix.getcwd" in msg and "--trust-checkpoint" in msg
    assert "argparse.Namespace" not in msg and "a whole pickled nn.Module" not in msg
    assert _state_equal(load_model(path, arch=TIMM, trust=True).module, model)


# --- 2. torchvision's reference scripts ------------------------------------------------------------------------------


class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
    """torchvision's ``references/classification/utils.py`` ExponentialMovingAverage, as the script defines it."""

    def __init__(self, model: nn.Module, decay: float, device: str = "cpu") -> None:
        def ema_avg(avg_model_param: torch.Tensor, model_param: torch.Tensor, num_averaged: torch.Tensor) -> Any:
            return decay * avg_model_param + (1 - decay) * model_param

        super().__init__(model, device, ema_avg, use_buffers=True)


def _save_on_master(*args: Any, **kwargs: Any) -> None:
    """``utils.save_on_master`` of the reference scripts, on the main (only) process."""
    torch.save(*args, **kwargs)


def _torchvision_reference_run(output_dir: Path, model: nn.Module, epoch: int) -> dict[str, nn.Module]:
    """The end of an epoch of torchvision's ``references/classification/train.py``: the checkpoint dict and its two
    saves, written as the script writes them::

        checkpoint = {"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                      "lr_scheduler": lr_scheduler.state_dict(), "epoch": epoch, "args": args}
        if model_ema: checkpoint["model_ema"] = model_ema.state_dict()
        if scaler: checkpoint["scaler"] = scaler.state_dict()
        utils.save_on_master(checkpoint, os.path.join(args.output_dir, f"model_{epoch}.pth"))
        utils.save_on_master(checkpoint, os.path.join(args.output_dir, "checkpoint.pth"))
    """
    model_without_ddp = copy.deepcopy(model)
    args = argparse.Namespace(model="resnet18", output_dir=str(output_dir), lr=0.1, epochs=epoch + 1,
                              model_ema=True, model_ema_decay=0.5, amp=True)
    optimizer = torch.optim.SGD(model_without_ddp.parameters(), lr=args.lr)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30)
    model_ema = ExponentialMovingAverage(model_without_ddp, decay=args.model_ema_decay)
    scaler = torch.amp.GradScaler("cpu")
    with torch.no_grad():
        for p in model_without_ddp.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model_ema.update_parameters(model_without_ddp)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "model": model_without_ddp.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "args": args,
    }
    if model_ema:
        checkpoint["model_ema"] = model_ema.state_dict()
    if scaler:
        checkpoint["scaler"] = scaler.state_dict()
    _save_on_master(checkpoint, os.path.join(args.output_dir, f"model_{epoch}.pth"))
    _save_on_master(checkpoint, os.path.join(args.output_dir, "checkpoint.pth"))
    return {"training": model_without_ddp, "ema": model_ema.module}


@pytest.fixture(scope="module")
def torchvision_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tv")
    base = _torchvision_reference_run(root / "base", torchvision.models.resnet18(num_classes=4), epoch=0)
    tuned = _torchvision_reference_run(root / "tuned", base["training"], epoch=1)
    return {"root": root, "base": base, "tuned": tuned}


@pytest.mark.parametrize("name", ["checkpoint.pth", "model_1.pth"])
def test_torchvision_reference_checkpoints_load(torchvision_runs: dict[str, Any], name: str) -> None:
    path = torchvision_runs["root"] / "tuned" / name
    lm = load_model(path, arch=RESNET)
    assert _state_equal(lm.module, torchvision_runs["tuned"]["training"])
    assert (lm.format, lm.weights, lm.entry) == ("torchvision reference script", "training", "model")
    assert lm.head is not None and lm.head["num_classes"] == 4
    assert any("also holds EMA weights ('model_ema')" in n for n in lm.notes), lm.notes
    ema = load_model(path, arch=RESNET, ema=True)
    assert _state_equal(ema.module, torchvision_runs["tuned"]["ema"])
    assert (ema.weights, ema.entry) == ("ema", "model_ema")
    assert any("n_averaged" in n for n in ema.notes) and any("'module.'" in n for n in ema.notes)


@pytest.mark.slow
def test_torchvision_reference_checkpoints_compare(run_cli: Any, tmp_path: Path,
                                                   torchvision_runs: dict[str, Any]) -> None:
    root = torchvision_runs["root"]
    base, tuned = root / "base" / "checkpoint.pth", root / "tuned" / "model_1.pth"
    want = expected_l2(torchvision_runs["base"]["training"], torchvision_runs["tuned"]["training"], "layer1")
    assert api_l2(base, tuned, arch=RESNET)[0] == pytest.approx(want, rel=1e-9)
    want_ema = expected_l2(torchvision_runs["base"]["ema"], torchvision_runs["tuned"]["ema"], "layer1")
    assert api_l2(base, tuned, arch=RESNET, ema=True)[0] == pytest.approx(want_ema, rel=1e-9)
    got, _ = cli_l2(run_cli, tmp_path, base, tuned, "--arch", RESNET, "--ema")
    assert got == pytest.approx(want_ema, rel=1e-9)
    _, run = cli_l2(run_cli, tmp_path, RESNET, tuned, "--arch", RESNET, "--ema")  # --ema skips the spec
    saved = json.loads((tmp_path / "cli.json").read_text())
    assert [m["weights"] for m in saved["models"]] == ["random", "ema"]
    run = run_cli("layers", tuned, "--arch", RESNET, "--ema", "--filter", "layer1")
    assert run.code == 0, run.err
    assert "layer1" in run.out and "EMA weights read from the checkpoint's 'model_ema' entry" in run.err


# --- 3. Lightning ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lightning_checkpoints_load_with_arch_and_compare(run_cli: Any, tmp_path: Path) -> None:
    import lightning as L

    class Classifier(L.LightningModule):
        def __init__(self, num_classes: int = 4, lr: float = 0.5) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = torchvision.models.resnet18(num_classes=num_classes)
            self.criterion = nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, num_classes))  # a buffer, saved too

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.criterion(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    module = Classifier()
    before = copy.deepcopy(module.model)
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,)))
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=True,
                        default_root_dir=str(tmp_path / "run"), enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    trainer.save_checkpoint(tmp_path / "final.ckpt")
    [callback_ckpt] = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    torch.save(before.state_dict(), tmp_path / "base.pt")

    for path in (tmp_path / "final.ckpt", callback_ckpt):
        lm = load_model(path, arch=RESNET)
        assert _state_equal(lm.module, module.model)
        assert (lm.format, lm.entry, lm.weights) == ("Lightning", "state_dict", "training")
        assert any("Kept the keys under 'model.'" in n and "criterion.weight" in n for n in lm.notes), lm.notes
    want = expected_l2(before, module.model, "layer1")
    assert api_l2(tmp_path / "base.pt", tmp_path / "final.ckpt", arch=RESNET)[0] == pytest.approx(want, rel=1e-9)
    assert cli_l2(run_cli, tmp_path, tmp_path / "base.pt", callback_ckpt, "--arch", RESNET)[0] == pytest.approx(
        want, rel=1e-9)


# --- 4. timm hub folders ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``timm.models.save_for_hf``, the local half of ``push_to_hf_hub``: config.json and the weights."""
    from timm.models import save_for_hf

    torch.manual_seed(0)
    base = timm.create_model("test_resnet", num_classes=7)
    tuned = perturbed_copy(base, noise=0.1, seed=2)
    root = tmp_path_factory.mktemp("hub")
    base.pretrained_cfg = {**base.pretrained_cfg, "input_size": (3, 96, 96)}  # as fine-tuned at another size
    save_for_hf(base, str(root / "base"), model_args={"num_classes": 7}, safe_serialization="both")
    save_for_hf(tuned, str(root / "tuned"), model_args={"num_classes": 7}, safe_serialization=False)
    return {"root": root, "base": base, "tuned": tuned}


def test_timm_hub_folder_needs_no_arch(hub_folders: dict[str, Any]) -> None:
    root = hub_folders["root"]
    assert {"config.json", "model.safetensors", "pytorch_model.bin"} <= set(os.listdir(root / "base"))
    lm = load_model(root / "base")
    assert _state_equal(lm.module, hub_folders["base"])
    assert (lm.arch, lm.arch_kwargs["num_classes"], lm.kind, lm.format) == (TIMM, 7, "safetensors", "timm hub folder")
    assert lm.label == "base" and len(lm.sha256) == 64
    tuned = load_model(root / "tuned")  # pytorch_model.bin only (safe_serialization=False)
    assert (tuned.kind, tuned.format) == ("state_dict", "timm hub folder")
    assert _state_equal(tuned.module, hub_folders["tuned"])
    reference = timm.create_model(f"local-dir:{root / 'base'}", pretrained=True)  # as timm reads the folder
    assert _state_equal(reference, lm.module)
    assert tuple(lm.module.pretrained_cfg["input_size"]) == tuple(reference.pretrained_cfg["input_size"]) == (3, 96, 96)
    assert _state_equal(load_model(f"local-dir:{root / 'base'}").module, reference)


def test_timm_hub_folders_compare(run_cli: Any, tmp_path: Path, hub_folders: dict[str, Any]) -> None:
    root = hub_folders["root"]
    want = expected_l2(hub_folders["base"], hub_folders["tuned"], "layer1")
    assert api_l2(root / "base", root / "tuned")[0] == pytest.approx(want, rel=1e-9)
    got, _ = cli_l2(run_cli, tmp_path, f"local-dir:{root / 'base'}", root / "tuned")
    assert got == pytest.approx(want, rel=1e-9)


def test_local_dir_that_is_no_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"is not a folder \(local-dir: names a model folder"):
        load_model(f"local-dir:{tmp_path / 'nope'}")


# --- 5. sharded safetensors with their index -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``huggingface_hub.save_torch_state_dict`` with a small ``max_shard_size``: shards and their index."""
    from huggingface_hub import save_torch_state_dict

    torch.manual_seed(0)
    base = timm.create_model("test_resnet", num_classes=7)
    tuned = perturbed_copy(base, noise=0.1, seed=3)
    root = tmp_path_factory.mktemp("sharded")
    for name, model in (("base", base), ("tuned", tuned)):
        (root / name).mkdir()
        save_torch_state_dict(model.state_dict(), str(root / name), max_shard_size="400KB")
    (root / "single").mkdir()
    save_torch_state_dict(base.state_dict(), str(root / "single"))  # fits one file: model.safetensors, no index
    return {"root": root, "base": base, "tuned": tuned}


def test_sharded_safetensors_folder_loads_with_arch(sharded_folders: dict[str, Any]) -> None:
    root = sharded_folders["root"]
    shards = sorted(p.name for p in (root / "tuned").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (root / "tuned" / "model.safetensors.index.json").is_file()
    lm = load_model(root / "tuned", arch=TIMM)
    assert _state_equal(lm.module, sharded_folders["tuned"])
    assert (lm.kind, lm.format) == ("safetensors", "sharded safetensors folder")
    assert any(f"Read the {len(shards)} shards" in n for n in lm.notes)
    single = load_model(root / "single", arch=TIMM)
    assert single.format == "weights folder" and _state_equal(single.module, sharded_folders["base"])
    with pytest.raises(CheckpointError, match="says nothing about its architecture. Pass --arch"):
        load_model(root / "tuned")


def test_sharded_folders_compare(run_cli: Any, tmp_path: Path, sharded_folders: dict[str, Any]) -> None:
    root = sharded_folders["root"]
    want = expected_l2(sharded_folders["base"], sharded_folders["tuned"], "layer1")
    assert api_l2(root / "base", root / "tuned", arch=TIMM)[0] == pytest.approx(want, rel=1e-9)
    assert cli_l2(run_cli, tmp_path, root / "single", root / "tuned", "--arch", TIMM)[0] == pytest.approx(
        want, rel=1e-9)


def test_a_missing_shard_is_named(tmp_path: Path, sharded_folders: dict[str, Any]) -> None:
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(sharded_folders["root"] / "tuned", folder)
    gone = sorted(folder.glob("model-*.safetensors"))[-1]
    gone.unlink()
    with pytest.raises(CheckpointError, match=f"lists shards that are not in .*{gone.name}"):
        load_model(folder, arch=TIMM)


# --- 6. a TorchScript archive against a state dict -------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=4)
    tuned = perturbed_copy(base, noise=0.1, seed=4)
    root = tmp_path_factory.mktemp("ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(tuned).save(str(root / "tuned.ts"))
    torch.save(base.state_dict(), root / "base.pt")
    return {"root": root, "base": base, "tuned": tuned}


@pytest.mark.parametrize("order", ["state-dict-first", "torchscript-first"])
def test_torchscript_against_a_state_dict(run_cli: Any, tmp_path: Path, scripted: dict[str, Any], order: str) -> None:
    root = scripted["root"]
    models = [root / "base.pt", root / "tuned.ts"]
    if order == "torchscript-first":
        models.reverse()
    want = expected_l2(scripted["base"], scripted["tuned"], "layer1")
    got, result = api_l2(*models, arch=RESNET)
    assert got == pytest.approx(want, rel=1e-9)
    assert sorted(m["kind"] for m in result.models) == ["state_dict", "torchscript"]
    assert cli_l2(run_cli, tmp_path, *models, "--arch", RESNET)[0] == pytest.approx(want, rel=1e-9)
    run = run_cli("compare", *models, "-m", "weight_l2", "--input-size", "32", "--out", tmp_path / "x")
    assert run.code == 1 and "Traceback" not in run.err and "--arch" in run.err


# --- 7. a spec without weights ---------------------------------------------------------------------------------------


def test_a_spec_without_weights_says_it_is_random(run_cli: Any, tmp_path: Path, scripted: dict[str, Any]) -> None:
    lm = load_model(RESNET)
    assert lm.weights == "random" and any("random weights" in n for n in lm.notes)
    base_pt = scripted["root"] / "base.pt"
    run = run_cli("layers", RESNET, "--input-size", "32", "--filter", "layer1")
    assert run.code == 0 and "random weights" in run.err
    run = run_cli("layers", base_pt, "--arch", RESNET, "--input-size", "32", "--filter", "layer1")
    assert run.code == 0 and "random weights" not in run.err
    _, run = cli_l2(run_cli, tmp_path, RESNET, base_pt, "--arch", RESNET)
    assert run.err.count("random weights") == 1 and "resnet18: torchvision:resnet18 names no weights" in run.err
    _, result = api_l2(base_pt, base_pt, arch=RESNET, labels=["a", "b"])
    assert [m["weights"] for m in result.models] == ["training", "training"]
    assert not any("random" in n for m in result.models for n in m["notes"])


def test_a_spec_with_weights_has_no_random_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftprobe.core import _archs

    built = {}

    def fake_build(spec: Any, kwargs: Any, *, download: bool = True) -> nn.Module:
        built["weights"] = spec.weights  # no network: stands in for the download of the named weights
        return torchvision.models.resnet18()

    monkeypatch.setattr("ftprobe.core.loading.build", fake_build)
    assert _archs.build is not fake_build
    lm = load_model("torchvision:resnet18:IMAGENET1K_V1")
    assert built["weights"] == "IMAGENET1K_V1"
    assert lm.weights == "pretrained" and not any("random" in n for n in lm.notes)


# --- 8. ftprobe layers DIR -------------------------------------------------------------------------------------------


def test_layers_lists_every_folder_format(run_cli: Any, hub_folders: dict[str, Any],
                                          sharded_folders: dict[str, Any]) -> None:
    for args in ([hub_folders["root"] / "base"], [f"local-dir:{hub_folders['root'] / 'tuned'}"],
                 [sharded_folders["root"] / "tuned", "--arch", TIMM], [sharded_folders["root"] / "single", "--arch",
                                                                         TIMM]):
        run = run_cli("layers", *args, "--input-size", "32", "--filter", "layer*")
        assert run.code == 0, (args, run.err)
        assert "layer1" in run.out and "layer4" in run.out


def test_a_folder_in_no_known_format_lists_what_ftprobe_looks_for(run_cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("my fine-tune")
    run = run_cli("layers", folder)
    assert run.code == 1 and "Traceback" not in run.err
    flat = " ".join(run.err.split())
    for needle in ("readme.txt", "config.json with an 'architecture'", "model.safetensors.index.json",
                   "adapter_config.json", "'model_type'"):
        assert needle in flat, needle
