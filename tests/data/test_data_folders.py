"""Folder sources: ImageFolder labels and order, flat folders, mixed layouts, symlink loops, limits, errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ftprobe.core.errors import DataError
from ftprobe.data import open_data, scan_folder


def test_image_folder_labels_and_class_order(class_folder: Path, helpers: SimpleNamespace) -> None:
    src = open_data(class_folder, size=5, preprocess="none", batch_size=4)
    assert src.kind == "image_folder" and src.has_labels and not src.multilabel
    assert src.classes == ("bird", "cat", "dog") and src.num_classes == 3
    names = [os.path.relpath(src.path_of(i), class_folder) for i in range(src.num_samples)]
    assert names == ["bird/B2.PNG", "bird/b1.png", "cat/c1.png", "cat/c2.png", "cat/sub/c3.png", "dog/d1.png"]
    batches = list(src.batches())
    labels = torch.cat([b.labels for b in batches])
    index = torch.cat([b.index for b in batches])
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert index.dtype == torch.int64 and index.tolist() == list(range(6))
    ids = [helpers.ident_of(x) for b in batches for x in b.x.numpy()]
    assert ids == [5, 4, 1, 2, 3, 6]  # pixels follow the same order (hidden files and folders were ignored)
    assert src.skipped == []


def test_flat_folder_has_no_labels(flat_folder: Path) -> None:
    src = open_data(flat_folder, size=4, batch_size=4)
    assert src.kind == "flat_folder" and not src.has_labels
    assert src.classes == () and src.num_classes is None and not src.multilabel
    batches = list(src.batches())
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(b.labels is None for b in batches)
    assert src.path_of(3) == str(flat_folder / "img03.png")


def test_class_folders_win_over_loose_images(class_folder: Path, helpers: SimpleNamespace) -> None:
    loose = helpers.write_id_image(class_folder / "loose.png", 9)
    src = open_data(class_folder, size=4)
    assert src.kind == "image_folder" and src.num_samples == 6
    ((path, reason),) = src.skipped
    assert path == str(loose) and "class folder" in reason
    assert src.describe()["skipped"] == 1


def test_empty_class_folder_still_counts_as_a_class(class_folder: Path) -> None:
    (class_folder / "ant").mkdir()
    src = open_data(class_folder, size=4)
    assert src.classes == ("ant", "bird", "cat", "dog")
    assert torch.cat([b.labels for b in src.batches()]).tolist() == [1, 1, 2, 2, 2, 3]


def _scan_with_deadline(root: Path, seconds: float = 20.0) -> object:
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("scan", scan_folder(root)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "scanning a folder with a symlink loop did not finish"
    return out["scan"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="platform without symlinks")
def test_symlink_loop_does_not_hang(class_folder: Path) -> None:
    os.symlink(class_folder / "cat", class_folder / "cat" / "sub" / "loop")  # cat/sub/loop -> cat
    os.symlink(class_folder, class_folder / "dog" / "up")  # dog/up -> root
    scan = _scan_with_deadline(class_folder)
    assert len(scan.paths) == 6 and len(set(scan.paths)) == 6  # type: ignore[attr-defined]
    src = open_data(class_folder, size=4)
    assert sum(len(b) for b in src.batches()) == 6


def test_limit_is_a_seeded_reproducible_subset_in_index_order(flat_folder: Path, helpers: SimpleNamespace) -> None:
    def indices(seed: int) -> list[int]:
        src = open_data(flat_folder, size=4, preprocess="none", limit=4, seed=seed, batch_size=3)
        assert src.num_samples == 4
        batches = list(src.batches())
        idx = torch.cat([b.index for b in batches]).tolist()
        assert [helpers.ident_of(x) for b in batches for x in b.x.numpy()] == idx  # ids equal global indices
        return idx

    a, b = indices(0), indices(0)
    assert a == b and a == sorted(a) and len(set(a)) == 4 and set(a) <= set(range(10))
    assert any(indices(s) != a for s in (1, 2, 3))  # the seed matters
    src = open_data(flat_folder, size=4, limit=100)
    assert src.num_samples == 10  # a limit above the size keeps everything


def test_describe_is_json_provenance(class_folder: Path) -> None:
    src = open_data(class_folder, size=16, preprocess="caffe", limit=3, seed=5)
    d = json.loads(json.dumps(src.describe()))
    assert d["kind"] == "image_folder" and d["root"] == str(class_folder)
    assert d["num_samples"] == 3 and d["num_found"] == 6 and d["num_classes"] == 3
    assert d["classes"] == ["bird", "cat", "dog"] and d["multilabel"] is False
    assert d["limit"] == 3 and d["seed"] == 5 and d["skipped"] == 0
    pre = d["preprocess"]
    assert pre["name"] == "caffe" and pre["channel_order"] == "BGR" and pre["size"] == 16
    assert pre["interpolation"] == "lanczos" and pre["mean"] == [103.939, 116.779, 123.68] and pre["std"] == [1, 1, 1]


def test_empty_folder_is_a_data_error_that_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"No image files found .*\.jpg .*\.webp") as e:
        open_data(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)


def test_missing_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_data(tmp_path / "nope")


def test_a_file_that_is_not_a_csv_is_a_data_error(tmp_path: Path, helpers: SimpleNamespace) -> None:
    img = helpers.write_id_image(tmp_path / "one.png", 1)
    with pytest.raises(DataError, match="not a .csv"):
        open_data(img)


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"workers": -1}, {"limit": 0}, {"seed": -1}, {"preprocess": "bgr"}], ids=str
)
def test_bad_options_are_data_errors(flat_folder: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError):
        open_data(flat_folder, **kwargs)  # type: ignore[arg-type]


def test_open_data_passes_a_data_source_through(flat_folder: Path) -> None:
    src = open_data(flat_folder, size=4)
    assert open_data(src) is src
