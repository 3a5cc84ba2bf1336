"""What a result says about its data: samples actually read (unreadable files not counted), and a notice when --limit
asks for more samples than there are."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ftprobe
from ftprobe.data import open_data
from ftprobe.testing import TinyNet, perturbed_copy


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    base = TinyNet(num_classes=3, seed=0)
    return base, perturbed_copy(base, noise=0.2, seed=1)


def _folder(root: Path, helpers: SimpleNamespace, good: int = 5) -> Path:
    for i in range(good):
        helpers.write_id_image(root / f"ok{i}.png", i, size=(16, 16))
    helpers.write_bad_files(root)  # 3 unreadable files
    return root


@pytest.mark.parametrize("workers", [0, 2], ids=["workers0", "workers2"])
def test_num_samples_in_a_result_counts_only_readable_files(tmp_path: Path, helpers: SimpleNamespace,
                                                            workers: int) -> None:
    root = _folder(tmp_path / "d", helpers)
    res = ftprobe.compare(*_pair(), layers="conv2d0", data=root, metrics="cka", size=16, batch_size=4,
                          workers=workers, device="cpu")
    assert res.run["samples"] == 5
    d = res.data
    assert d["num_samples"] == 5 and d["num_tried"] == 8 and d["num_found"] == 8
    assert d["skipped"] == 3 and len(d["skipped_files"]) == 3
    assert res.get("cka", "conv2d0", "n") == 5  # the metric saw the same count


def test_pass_counts_with_a_limit_and_skips(tmp_path: Path, helpers: SimpleNamespace) -> None:
    root = _folder(tmp_path / "d", helpers)
    src = open_data(root, size=6, limit=8, batch_size=3)
    info = src.describe()
    assert info["num_samples"] == 8 and info["notes"] == []  # 8 of 8: nothing to say before the pass
    n = sum(len(b) for b in src.batches())
    counts = src.pass_counts(info, list(src.skipped), n, interrupted=False)
    assert n == 5 and counts["num_samples"] == 5 and counts["num_tried"] == 8 and counts["skipped"] == 3


def test_limit_above_the_folder_size_is_a_notice_in_the_result(flat_folder: Path) -> None:
    notes: list[str] = []
    res = ftprobe.compare(*_pair(), layers="conv2d0", data=flat_folder, metrics="cka", size=8, limit=100,
                          device="cpu", notice=notes.append)
    expected = f"--limit 100 is more than the 10 samples in {flat_folder}: all 10 are used"
    assert any(expected in n for n in res.data["notes"])
    assert any(expected in n for n in notes)
    assert res.run["samples"] == 10
    quiet = ftprobe.compare(*_pair(), layers="conv2d0", data=flat_folder, metrics="cka", size=8, limit=10,
                            device="cpu")
    assert quiet.data["notes"] == []  # a limit equal to the size is no news


def test_limit_above_a_dataset_or_loader_is_said_before_the_pass() -> None:
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6) % 2
    ds = TensorDataset(x, y)
    assert open_data(ds, limit=9).describe()["notes"] == [
        "--limit 9 is more than the 6 samples in the TensorDataset: all 6 are used, nothing is repeated"]
    assert "the 6 samples in the dataloader" in open_data(DataLoader(ds, batch_size=4), limit=9).notes()[0]
    assert open_data(DataLoader(ds, batch_size=4), limit=6).notes() == []


def test_limit_above_a_stream_of_unknown_length_is_said_after_the_pass() -> None:
    def stream():
        for _ in range(3):
            yield torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])

    notes: list[str] = []
    res = ftprobe.compare(*_pair(), layers="conv2d0", data=stream(), metrics="cka", limit=50, device="cpu",
                          notice=notes.append)
    assert res.run["samples"] == 12 and res.data["num_samples"] == 12
    assert res.data["notes"] == ["--limit 50 is more than the 12 samples in the iterable: all 12 are used, "
                                 "nothing is repeated"]
    assert res.data["notes"][0] in notes
