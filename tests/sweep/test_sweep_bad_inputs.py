"""The bad-input matrix: every mistake a user can make ends in one ``Error:`` message (exit 1; 2 for click usage
errors) that says what to fix, never a Python traceback; inputs that are odd but valid run and are reported.

"""

from __future__ import annotations

import pickle
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import ftprobe
from ftprobe.core.errors import FtprobeError
from ftprobe.testing import TinyNet, perturbed_copy

METRICS = "cka,weight_l2,topk_overlap,class_concentration"
ARCH = "torchvision:mobilenet_v3_small"


@pytest.fixture
def compare_args(small_checkpoints: tuple[Path, Path], small_images: Path, tmp_path: Path) -> list[Any]:
    base, tuned = small_checkpoints
    return ["compare", base, tuned, "--layers", "features.5", "--data", small_images, "--size", "32",
            "--batch-size", "4", "-m", METRICS, "--k", "3", "--out", tmp_path / "out"]


def _swap(args: list[Any], flag: str, value: Any) -> list[Any]:
    """``args`` with the value after ``flag`` replaced."""
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _with_tuned(args: list[Any], tuned: Any) -> list[Any]:
    return [args[0], args[1], tuned, *args[3:]]


class _Payload:
    """What a malicious pickle does: on unpickling it writes ``marker`` (with a stdlib callable, so it would work)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


# -- checkpoints ---------------------------------------------------------------------------------------------------


def test_missing_checkpoint(run_cli, user_error, compare_args, tmp_path):
    user_error(run_cli(*_with_tuned(compare_args, tmp_path / "nope.pt")), "Checkpoint file not found", "nope.pt")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param(b"", "the file is empty", id="empty"),
        pytest.param(b"TRUNCATED", "truncated or damaged zip archive", id="truncated"),
        pytest.param(b"epoch,loss\n1,0.5\n", "neither a zip archive nor a torch pickle", id="csv-text"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(64), "not a PyTorch checkpoint", id="png-bytes"),
    ],
)
def test_unreadable_checkpoint(run_cli, user_error, compare_args, small_checkpoints, tmp_path, content, needle):
    path = tmp_path / "bad.pt"
    if content == b"TRUNCATED":
        raw = small_checkpoints[1].read_bytes()
        content = raw[: len(raw) // 2]
    path.write_bytes(content)
    user_error(run_cli(*_with_tuned(compare_args, path)), "is not a PyTorch checkpoint", needle)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's weights-only reader on a raw pickle
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_payload_never_runs_without_trust(run_cli, user_error, compare_args, tmp_path, writer):
    marker, path = tmp_path / "PWNED", tmp_path / "payload.pt"
    if writer == "torch.save":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
        needle = "--trust-checkpoint"
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
        needle = "not a PyTorch checkpoint"
    user_error(run_cli(*_with_tuned(compare_args, path)), needle)
    assert not marker.exists()


def test_pickled_module_needs_trust_and_loads_with_it(run_cli, user_error, tmp_path, small_images):
    base = TinyNet(seed=0)
    torch.save(base, tmp_path / "base.pt")
    torch.save(perturbed_copy(base), tmp_path / "tuned.pt")
    args = ["compare", tmp_path / "base.pt", tmp_path / "tuned.pt", "--layers", "mixed4*", "-m", "weight_l2",
            "--input-size", "32", "--out", tmp_path]
    user_error(run_cli(*args), "holds pickled Python objects", "--trust-checkpoint")
    r = run_cli(*args, "--trust-checkpoint")
    assert r.code == 0, r.err
    assert {v.layer for v in ftprobe.Result.load(tmp_path / "results.json").select("weight_l2")} == {"mixed4a",
                                                                                                    "mixed4d"}


def test_state_dict_of_another_architecture(run_cli, user_error, compare_args, tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pt")
    r = run_cli(*_with_tuned(compare_args, tmp_path / "resnet.pt"), "--arch", ARCH)
    user_error(r, "does not fit the architecture torchvision:mobilenet_v3_small", "--arch")


@pytest.fixture
def head10(tmp_path: Path) -> Path:
    """A fine-tune of the base architecture whose classifier has 10 classes instead of 1000."""
    torch.manual_seed(3)
    return ftprobe.save(torchvision.models.mobilenet_v3_small(num_classes=10), tmp_path / "head10.pt", arch=ARCH)


@pytest.mark.parametrize("layers", [["--layers", "features.5"], []], ids=["named-layer", "natural-layers"])
def test_replaced_head_works_and_is_reported(run_cli, compare_args, head10, tmp_path, layers):
    args = [a for a in _with_tuned(compare_args, head10) if a not in ("--layers", "features.5")]
    r = run_cli(*args, *layers, "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    assert "Replaced classification head 'classifier.3': 10 classes" in r.err
    result = ftprobe.Result.load(tmp_path / "r.json")
    assert result.models[1]["head"]["num_classes"] == 10 and result.models[0]["head"] is None
    assert {v.metric for v in result.values} == set(METRICS.split(","))


def test_weight_change_of_a_replaced_head_layer_reports_it(run_cli, small_checkpoints, head10, tmp_path):
    r = run_cli("compare", small_checkpoints[0], head10, "--layers", "classifier", "-m", "weight_l2",
            "--input-size", "32", "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    [value] = ftprobe.Result.load(tmp_path / "r.json").select("weight_l2")
    assert value.arrays["replaced"] == ["classifier.3"]


# -- layers --------------------------------------------------------------------------------------------------------


def test_layer_not_found(run_cli, user_error, compare_args):
    user_error(run_cli(*_swap(compare_args, "--layers", "featurs.5")), "Unknown layer 'featurs.5'", "Did you mean")


class _NoTensorOut(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        self.seen = x.shape


class _SpyNet(TinyNet):
    def __init__(self) -> None:
        super().__init__(seed=0)
        self.spy = _NoTensorOut()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.spy(x)
        return super().forward(x)


def test_layer_whose_output_holds_no_tensor() -> None:
    base = _SpyNet()
    with pytest.raises(FtprobeError, match="'spy' .* returns no tensor.*pick one of its submodules"):
        ftprobe.compare(base, perturbed_copy(base), layers=["spy"], metrics="weight_l2", input_size=32)


def test_models_whose_layer_shapes_differ(run_cli, user_error, compare_args):
    args = ["compare", ARCH, "torchvision:mobilenet_v3_large", *compare_args[3:]]
    user_error(run_cli(*args), "layer 'features.5' has output shape (40, 2, 2)", "(40, 4, 4)", "differ in architecture")


# -- data ----------------------------------------------------------------------------------------------------------


def test_data_directory_missing(run_cli, user_error, compare_args, tmp_path):
    user_error(run_cli(*_swap(compare_args, "--data", tmp_path / "nodir")), "does not exist")


def test_data_directory_empty(run_cli, user_error, compare_args, tmp_path):
    (tmp_path / "empty").mkdir()
    user_error(run_cli(*_swap(compare_args, "--data", tmp_path / "empty")), "No image files found")


def test_data_directory_of_unreadable_files_only(run_cli, user_error, compare_args, tmp_path):
    for cls, name, data in [("a", "x.jpg", b"not a jpeg"), ("b", "y.png", b"\x89PNG\r\n\x1a\n garbage")]:
        (tmp_path / "bad" / cls).mkdir(parents=True)
        (tmp_path / "bad" / cls / name).write_bytes(data)
    r = run_cli(*_swap(compare_args, "--data", tmp_path / "bad"))
    user_error(r, "No readable sample", "x.jpg", "UnidentifiedImageError")


def test_mixed_image_modes_in_one_folder(run_cli, compare_args, tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    images = {
        "a/l.png": Image.fromarray(grey, "L"),
        "a/la.png": Image.fromarray(np.stack([grey, grey], -1), "LA"),
        "a/p.png": Image.fromarray(rgb).convert("P"),
        "b/rgba.png": Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA"),
        "b/cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "b/i16.png": Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)),
    }
    for rel, img in images.items():
        (tmp_path / "mixed" / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "mixed" / rel)
    modes = {Image.open(tmp_path / "mixed" / rel).mode for rel in images}
    assert modes == {"L", "LA", "P", "RGBA", "CMYK", "I;16"}
    r = run_cli(*_swap(compare_args, "--data", tmp_path / "mixed"), "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    result = ftprobe.Result.load(tmp_path / "r.json")
    assert result.run["samples"] == 6 and result.data["skipped"] == 0 and result.warnings == []


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` pixels: PIL refuses it at open, before decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_decompression_bomb_is_skipped_and_listed(run_cli, compare_args, small_images, tmp_path):
    data = tmp_path / "bomb"
    shutil.copytree(small_images, data)
    (data / "class_0" / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    r = run_cli(*_swap(compare_args, "--data", data), "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    result = ftprobe.Result.load(tmp_path / "r.json")
    [skipped] = result.data["skipped_files"]
    assert skipped["path"].endswith("bomb.png") and "decompression bomb" in skipped["reason"]
    assert result.run["samples"] == 8


def test_symlink_loop_is_entered_once(run_cli, compare_args, small_images, tmp_path):
    data = tmp_path / "loop"
    shutil.copytree(small_images, data)
    (data / "class_0" / "back").symlink_to(data)  # a loop to the top
    (data / "class_1" / "again").symlink_to(data / "class_1")  # a loop to itself
    r = run_cli(*_swap(compare_args, "--data", data), "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    result = ftprobe.Result.load(tmp_path / "r.json")
    assert result.run["samples"] == 8 and result.data["classes"] == ["class_0", "class_1"]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        pytest.param("path,label\nclass_0/img_000.png,a\n,b\nclass_0/img_001.png,\n",
                     ("2 bad row(s)", "line 3: no path", "line 4: no label"), id="missing-path-and-label"),
        pytest.param("path,label\nnope1.png,a\nnope2.png,b\n", ("None of the 2 image paths", "nope1.png"),
                     id="files-missing"),
        pytest.param("label,score\na,1\n", ("no image path column",), id="no-path-column"),
        pytest.param(b"\xff\xfe\x00p\x00a\x00t\x00h\x00", ("is not UTF-8 text",), id="not-utf8"),
    ],
)
def test_bad_csv(run_cli, user_error, compare_args, small_images, tmp_path, text, needles):
    csv = tmp_path / "list.csv"
    shutil.copytree(small_images, tmp_path, dirs_exist_ok=True)
    csv.write_bytes(text if isinstance(text, bytes) else text.encode())
    user_error(run_cli(*_swap(compare_args, "--data", csv)), *needles)


# -- metrics -------------------------------------------------------------------------------------------------------


def test_minibatch_cka_with_batches_under_four(run_cli, user_error, compare_args):
    r = run_cli(*_swap(compare_args, "--batch-size", "3"), "-o", "cka.estimator=minibatch")
    user_error(r, "needs at least 4 samples per batch", "the batch size is 3")


def test_exact_flattened_cka_over_memory_is_refused_up_front(run_cli, user_error, compare_args):
    r = run_cli(*compare_args, "-o", "cka.features=flatten", "-o", "cka.max_memory_gb=0.000001")
    user_error(r, "needs about", "over max_memory_gb=1e-06", "features='gap'")
    assert "samples from" not in r.err  # refused before the pass: nothing was streamed


@pytest.fixture(params=["nan", "inf"])
def nonfinite_run(request, run_cli, compare_args, tmp_path) -> tuple[Any, ftprobe.Result | None]:
    """The base against a copy with one filter of ``features.4`` set to NaN or +Inf: ``features.3`` stays finite,
    ``features.5`` does not."""
    torch.manual_seed(0)
    sd = torchvision.models.mobilenet_v3_small().state_dict()
    bad = {k: v.clone() for k, v in sd.items()}
    bad["features.4.block.0.0.weight"][0] = float(request.param)
    base = ftprobe.save(sd, tmp_path / "base.pt", arch=ARCH)
    tuned = ftprobe.save(bad, tmp_path / f"{request.param}.pt", arch=ARCH)
    r = run_cli("compare", base, tuned, *compare_args[3:], "--layers", "features.3", "--json", tmp_path / "r.json")
    return r, ftprobe.Result.load(tmp_path / "r.json") if r.code == 0 else None


def test_nonfinite_activations_are_reported_per_layer_and_the_run_goes_on(nonfinite_run):
    r, result = nonfinite_run
    assert r.code == 0, r.err
    [warning] = result.warnings
    assert "non-finite values (NaN or Inf)" in warning and "layer features.5" in warning
    cka = {v.layer: v.scalars["cka"] for v in result.select("cka") if v.layer != "*"}
    assert np.isnan(cka["features.5"]) and cka["features.3"] == pytest.approx(1.0)


def test_nonfinite_activations_mark_the_cka_value(nonfinite_run):
    _, result = nonfinite_run
    [value] = [v for v in result.select("cka", layer="features.5")]
    assert "non-finite" in value.arrays.get("note", "")


def _interrupting(batches: int, at: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    for i in range(batches):
        if i == at:
            raise KeyboardInterrupt
        yield torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 0, 1])


def test_ctrl_c_removes_hooks_and_keeps_partial_state() -> None:
    base = TinyNet(seed=0).train()
    tuned = perturbed_copy(base)
    result = ftprobe.compare(base, tuned, layers=["mixed4a", "mixed5b"], data=_interrupting(5, at=2),
                             metrics="cka,topk_overlap", options={"topk_overlap": {"k": 3}}, input_size=32)
    assert result.run["interrupted"] and result.run["samples"] == 8
    assert any("interrupted after 8 samples" in w for w in result.warnings)
    assert {v.scalars["n"] for v in result.select("cka") if v.layer != "*"} == {8.0}
    for model in (base, tuned):
        assert all(not m._forward_hooks for m in model.modules())
        assert all(m.training for m in model.modules())  # training flags restored


def test_ctrl_c_through_the_cli_saves_results_and_exits_130(run_cli, compare_args, monkeypatch, tmp_path):
    from ftprobe.data import loaders

    real = loaders.FileDataset.__getitem__

    def interrupted(self: Any, i: int) -> Any:
        if i >= 4:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(loaders.FileDataset, "__getitem__", interrupted)
    r = run_cli(*compare_args, "--json", tmp_path / "r.json")
    assert r.code == 130 and "Traceback" not in r.err
    result = ftprobe.Result.load(tmp_path / "r.json")
    assert result.run["interrupted"] and result.run["samples"] == 4


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        pytest.param(["--batch-size", "0"], "--batch-size", id="batch-size-zero"),
        pytest.param(["--pairs", "some"], "--pairs", id="pairs-choice"),
        pytest.param(["-o", "nonsense"], "METRIC.KEY=VALUE", id="option-syntax"),
    ],
)
def test_click_usage_errors_exit_2(run_cli, user_error, compare_args, extra, needle):
    user_error(run_cli(*compare_args, *extra), needle, code=2)


# -- tracebacks the sweep found (each fixed where it lived; the tests keep them fixed) --------------------------

TRACEBACKS = [
    pytest.param(["--k", "abc"], "--k", id="k-not-a-number"),
    pytest.param(["-o", "weight_l2.top_filters=abc"], "top_filters", id="top-filters-not-a-number"),
    pytest.param(["-o", "topk_overlap.score=[1]"], "score", id="score-a-list"),
    pytest.param(["--device", "tpu"], "--device", id="unknown-device"),
    pytest.param(["--out", "FILE"], "--out", id="out-is-a-file"),
]


@pytest.mark.parametrize(("extra", "needle"), TRACEBACKS)
def test_user_mistake_is_one_message_not_a_traceback(run_cli, user_error, compare_args, tmp_path, extra, needle):
    if "FILE" in extra:
        (tmp_path / "a_file").write_text("x")
        extra = [str(tmp_path / "a_file") if e == "FILE" else e for e in extra]
    # option values click checks are usage errors (exit 2); the others are ftprobe errors (exit 1)
    user_error(run_cli(*compare_args, *extra), needle, code=2 if extra[0] in ("--k", "--out") else 1)


def test_tensor_batches_the_model_cannot_take(tensor_data) -> None:
    base = TinyNet(seed=0)
    with pytest.raises(FtprobeError, match="batch"):
        ftprobe.compare(base, perturbed_copy(base), layers=["mixed4a"], data=tensor_data(8, 32, channels=1),
                        metrics="cka", batch_size=4, input_size=32)


def test_recorded_layer_shapes_are_those_of_the_data(tensor_data) -> None:
    base = TinyNet(seed=0)
    result = ftprobe.compare(base, perturbed_copy(base), layers=["mixed4a"], data=tensor_data(8, 32), metrics="cka",
                             batch_size=4)
    assert result.layers[0]["shape"] == [16, 8, 8]
