"""Fixtures for the data layer: every image is generated into ``tmp_path`` (nothing is stored in the repository).

Each generated "id image" is a solid colour whose red channel encodes an integer id (``R = 10 * id``), saved as
PNG (lossless), so a test can tell from a batch's pixels which file a sample came from.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def write_id_image(path: Path, ident: int, size: tuple[int, int] = (12, 9)) -> Path:
    """Save a solid RGB PNG with ``R = 10 * ident`` (``ident`` in 0..25), ``G = 50``, ``B = 200``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10 * ident, 50, 200)).save(path, format="PNG")
    return path


def ident_of(x_rgb01: np.ndarray) -> int:
    """Recover the id from one ``(3, H, W)`` sample preprocessed with ``"none"``."""
    return int(round(float(x_rgb01[0].mean()) * 255 / 10))


def write_bad_files(folder: Path) -> dict[str, Path]:
    """A corrupt ``.jpg`` (random bytes), a truncated PNG and a zero-byte file; returns them by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    truncated = folder / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    return {"corrupt": corrupt, "truncated": truncated, "empty": empty}


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """ImageFolder layout: classes ``bird`` (2), ``cat`` (3, one nested, one ``.JPG``-cased PNG name), ``dog`` (1);
    plus noise that must be ignored (a ``.txt`` file, a hidden file, a hidden folder)."""
    root = tmp_path / "imgs"
    write_id_image(root / "cat" / "c1.png", 1)
    write_id_image(root / "cat" / "c2.png", 2)
    write_id_image(root / "cat" / "sub" / "c3.png", 3)
    write_id_image(root / "bird" / "b1.png", 4)
    write_id_image(root / "bird" / "B2.PNG", 5)
    write_id_image(root / "dog" / "d1.png", 6)
    (root / "cat" / "notes.txt").write_text("not an image")
    write_id_image(root / "dog" / ".hidden.png", 7)
    write_id_image(root / ".ipynb_checkpoints" / "x.png", 8)
    return root


@pytest.fixture
def flat_folder(tmp_path: Path) -> Path:
    """Ten id images directly in one folder, ids 0..9, names ``img00.png`` …"""
    root = tmp_path / "flat"
    for i in range(10):
        write_id_image(root / f"img{i:02d}.png", i)
    return root


@pytest.fixture
def id_images(tmp_path: Path) -> Callable[[Path, int], list[Path]]:
    """Factory: write ``n`` id images (ids 0..n-1) into a folder and return their paths."""

    def make(folder: Path, n: int) -> list[Path]:
        return [write_id_image(folder / f"img{i:02d}.png", i) for i in range(n)]

    return make


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The module's helper functions, for tests (test files do not import conftest)."""
    return SimpleNamespace(write_id_image=write_id_image, ident_of=ident_of, write_bad_files=write_bad_files)
