"""CSV image lists: single label, multi-label in one cell, 0/1 class columns, relative paths, bad rows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ftprobe.core.errors import DataError
from ftprobe.data import open_data, read_csv


@pytest.fixture
def pics(tmp_path: Path, helpers: SimpleNamespace) -> Path:
    """``tmp_path/data/pics/p0.png … p4.png`` (ids 0..4); CSVs go into ``tmp_path/data``."""
    for i in range(5):
        helpers.write_id_image(tmp_path / "data" / "pics" / f"p{i}.png", i)
    return tmp_path / "data"


def _write(folder: Path, text: str, name: str = "list.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_single_label_with_relative_paths(pics: Path, helpers: SimpleNamespace) -> None:
    csv = _write(pics, "filename,label,split\npics/p3.png,dog,test\npics/p0.png,cat,test\npics/p1.png,dog,train\n")
    src = open_data(csv, size=4, preprocess="none")
    assert src.kind == "csv" and src.has_labels and not src.multilabel
    assert src.classes == ("cat", "dog") and src.num_classes == 2
    assert src.path_of(0) == str(pics / "pics" / "p3.png")
    (b,) = list(src.batches())
    assert b.labels.tolist() == [1, 0, 1] and b.labels.dtype == torch.int64
    assert [helpers.ident_of(x) for x in b.x.numpy()] == [3, 0, 1]  # row order, read relative to the CSV's folder
    assert src.describe()["ignored_columns"] == ["split"]


def test_integer_labels_are_class_indices(pics: Path) -> None:
    csv = _write(pics, "path,label\npics/p0.png,2\npics/p1.png,10\n")
    table = read_csv(csv)
    assert table.labels.tolist() == [2, 10] and len(table.classes) == 11 and table.classes[10] == "10"


@pytest.mark.parametrize("sep", [";", "|"])
def test_multilabel_in_one_cell(pics: Path, sep: str) -> None:
    csv = _write(pics, f'image,labels\npics/p0.png,"angel{sep}saint"\npics/p1.png,saint\npics/p2.png,crucifixion\n')
    src = open_data(csv, size=4)
    assert src.multilabel and src.classes == ("angel", "crucifixion", "saint")
    (b,) = list(src.batches())
    assert b.labels.dtype == torch.int64 and b.labels.tolist() == [[1, 0, 1], [0, 0, 1], [0, 1, 0]]


def test_multilabel_as_zero_one_columns(pics: Path, tmp_path: Path) -> None:
    absolute = pics / "pics" / "p4.png"
    csv = _write(pics, f"path,angel,saint,note\npics/p0.png,1,1,a\n{absolute},0,1,b\npics/p2.png,0,0,c\n")
    src = open_data(csv, size=4, batch_size=2)
    assert src.multilabel and src.classes == ("angel", "saint") and src.num_classes == 2
    labels = torch.cat([b.labels for b in src.batches()])
    assert labels.shape == (3, 2) and labels.dtype == torch.int64
    assert labels.tolist() == [[1, 1], [0, 1], [0, 0]]
    assert src.path_of(1) == str(absolute)  # absolute paths kept
    assert src.describe()["ignored_columns"] == ["note"]


def test_bad_rows_list_line_numbers_and_the_fix(pics: Path) -> None:
    text = "path,label\npics/p0.png,cat\n,dog\npics/p1.png,\npics/p2.png,dog\npics/p3.png, \n"
    with pytest.raises(DataError) as e:
        open_data(_write(pics, text))
    msg = str(e.value)
    assert "3 bad row(s)" in msg and "line 3" in msg and "line 4" in msg and "line 6" in msg
    assert "line 2" not in msg and "line 5" not in msg
    assert "no path" in msg and "no label" in msg and "Fill in" in msg


def test_empty_zero_one_cell_is_a_bad_row(pics: Path) -> None:
    with pytest.raises(DataError, match=r"line 3: empty class column\(s\) b"):
        open_data(_write(pics, "path,a,b\npics/p0.png,1,0\npics/p1.png,1,\n"))


def test_many_bad_rows_are_summarised(pics: Path) -> None:
    rows = "".join(f"pics/p{i % 5}.png,\n" for i in range(12))
    with pytest.raises(DataError, match=r"12 bad row\(s\).*line 6: .*\(and 7 more\)"):
        open_data(_write(pics, "path,label\n" + rows))


def test_csv_without_path_column_names_the_accepted_ones(pics: Path) -> None:
    with pytest.raises(DataError, match="path, file, filename, image"):
        open_data(_write(pics, "img_name,label\npics/p0.png,cat\n"))


def test_csv_with_only_a_header_is_a_data_error(pics: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        open_data(_write(pics, "path,label\n"))


def test_csv_whose_files_are_all_missing_says_where_paths_are_read_from(pics: Path) -> None:
    with pytest.raises(DataError, match="read from the CSV's folder"):
        open_data(_write(pics, "path,label\np0.png,cat\np1.png,dog\n"))


def test_unlabelled_csv_and_a_missing_file_is_skipped(pics: Path) -> None:
    src = open_data(_write(pics, "file\npics/p0.png\npics/gone.png\npics/p1.png\n"), size=4)
    assert not src.has_labels
    assert sum(len(b) for b in src.batches()) == 2
    ((path, reason),) = src.skipped
    assert path.endswith("gone.png") and "not found" in reason


def test_tab_separated_list(pics: Path) -> None:
    src = open_data(_write(pics, "path\tlabel\npics/p0.png\ta\npics/p1.png\tb\n", name="list.tsv"), size=4)
    assert src.classes == ("a", "b")
