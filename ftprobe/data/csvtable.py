"""Reading an image list from a CSV file (single-label, multi-label in one cell, or one 0/1 column per class).

Format (documented in the README):

* a header row; the path column is the first of ``path``, ``file``, ``filename``, ``image`` (any case);
* labels either in a ``label`` (or ``labels``) column (several labels in one cell separated by ``;`` or ``|`` make the
  table multi-label), or in several 0/1 columns, one per class (multi-label; the column names are the classes);
  other columns whose values are not all 0/1 are ignored and listed in ``describe()["ignored_columns"]``;
* labels that are all non-negative integers are used as class indices (classes ``"0" … "max"``); otherwise the classes
  are the sorted distinct label strings;
* paths are relative to the CSV's folder (absolute paths are kept); a ``.tsv`` file, or a header with tabs and no
  commas, is read tab-separated.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ftprobe.core.errors import DataError

__all__ = ["PATH_COLUMNS", "CsvTable", "read_csv"]

PATH_COLUMNS: tuple[str, ...] = ("path", "file", "filename", "image")
LABEL_COLUMNS: tuple[str, ...] = ("label", "labels")
_SPLIT = re.compile(r"[;|]")
_MAX_LISTED = 5


@dataclass
class CsvTable:
    """Parsed CSV image list.

    Attributes:
        paths: absolute (or CSV-relative resolved) image paths, in row order.
        labels: ``(N,)`` int64 class indices, ``(N, K)`` int64 multi-hot, or ``None``.
        classes: class names in index order (empty when unlabelled).
        multilabel: whether ``labels`` is multi-hot.
        ignored_columns: columns that are neither the path, the label nor 0/1 class columns.
    """

    paths: list[str]
    labels: Tensor | None
    classes: tuple[str, ...]
    multilabel: bool
    ignored_columns: list[str] = field(default_factory=list)


def _bad_rows_error(csv_path: str, bad: list[tuple[int, str]], fix: str) -> DataError:
    listed = "; ".join(f"line {line}: {why}" for line, why in bad[:_MAX_LISTED])
    more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
    return DataError(f"{len(bad)} bad row(s) in {csv_path!r}: {listed}{more}. {fix}")


def _class_index(values: list[list[str]]) -> tuple[tuple[str, ...], dict[str, int]]:
    distinct = {v for row in values for v in row}
    if distinct and all(v.isdigit() for v in distinct):
        top = max(int(v) for v in distinct)
        return tuple(str(i) for i in range(top + 1)), {v: int(v) for v in distinct}
    classes = tuple(sorted(distinct))
    return classes, {c: i for i, c in enumerate(classes)}


def read_csv(csv_path: str | os.PathLike[str]) -> CsvTable:
    """Read an image list; see the module docstring for the accepted layouts.

    Raises:
        DataError: no header / no path column / no rows, or rows with a missing path or label (with line numbers).
    """
    path = os.fspath(csv_path)
    try:
        return _read_csv(path)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path!r} is not UTF-8 text (byte {e.start}: {e.reason}). Save the image list as UTF-8 CSV "
            "(a header such as `path,label`, one image per row)."
        ) from None
    except csv.Error as e:
        raise DataError(
            f"{path!r} cannot be read as CSV ({e}). Check that it is a text file of `path,label` rows."
        ) from None


def _read_csv(path: str) -> CsvTable:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        delim = "\t" if path.lower().endswith(".tsv") or ("\t" in first and "," not in first) else ","
        f.seek(0)
        reader = csv.reader(f, delimiter=delim)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path!r} is empty or has no header row. Add a header such as `path,label`.")
        names = [h.strip() for h in header]
        lower = [h.lower() for h in names]
        rows: list[tuple[int, list[str]]] = [(reader.line_num, [c.strip() for c in r]) for r in reader if any(r)]
    pcol = next((lower.index(c) for c in PATH_COLUMNS if c in lower), None)
    if pcol is None:
        raise DataError(
            f"{path!r} has no image path column (columns: {', '.join(names)}). Name it one of: "
            f"{', '.join(PATH_COLUMNS)}."
        )
    if not rows:
        raise DataError(f"{path!r} has a header but no rows: list one image per row.")

    def cell(r: list[str], i: int) -> str:
        return r[i] if i < len(r) else ""

    lcol = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
    others = [i for i in range(len(names)) if i not in (pcol, lcol)]
    class_cols: list[int] = []
    if lcol is None:
        for i in others:
            values = {cell(r, i) for _, r in rows} - {""}
            if values and values <= {"0", "1"}:
                class_cols.append(i)
    ignored_names = [names[i] for i in others if i not in class_cols]

    bad: list[tuple[int, str]] = []
    for line, r in rows:
        if not cell(r, pcol):
            bad.append((line, f"no path in column {names[pcol]!r}"))
        elif lcol is not None and not _SPLIT.sub("", cell(r, lcol)).strip():
            bad.append((line, f"no label in column {names[lcol]!r}"))
        elif class_cols and any(not cell(r, i) for i in class_cols):
            missing = [names[i] for i in class_cols if not cell(r, i)]
            bad.append((line, f"empty class column(s) {', '.join(missing)}"))
    if bad:
        raise _bad_rows_error(
            path, bad, "Fill in every path and label (0/1 in each class column), or delete those rows."
        )

    paths = [os.path.normpath(os.path.join(base, cell(r, pcol))) for _, r in rows]
    if lcol is not None:
        raw = [cell(r, lcol) for _, r in rows]
        multilabel = any(_SPLIT.search(v) for v in raw)
        parts = [[p.strip() for p in _SPLIT.split(v) if p.strip()] for v in raw]
        classes, index = _class_index(parts)
        if multilabel:
            labels = torch.zeros(len(rows), len(classes), dtype=torch.int64)
            for n, ps in enumerate(parts):
                labels[n, [index[p] for p in ps]] = 1
        else:
            labels = torch.tensor([index[ps[0]] for ps in parts], dtype=torch.int64)
        return CsvTable(paths, labels, classes, multilabel, ignored_names)
    if class_cols:
        labels = torch.tensor([[int(cell(r, i)) for i in class_cols] for _, r in rows], dtype=torch.int64)
        return CsvTable(paths, labels, tuple(names[i] for i in class_cols), True, ignored_names)
    return CsvTable(paths, None, (), False, ignored_names)
