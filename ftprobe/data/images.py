"""Finding and decoding image files: folder scans, CSV tables and a decoder that never crashes on a bad file.

Rules (documented in the README):

* extensions ``.jpg .jpeg .png .bmp .gif .tif .tiff .webp`` (any case); names starting with ``.`` are ignored (hidden
  files, ``.ipynb_checkpoints``, macOS ``._x.jpg``);
* folders are walked in sorted name order; a symlinked folder is followed once: a folder already visited (a
  symlink loop, or a second link to the same folder) is not entered again;
* every image becomes 8-bit RGB: 16-bit and 32-bit grey (``I;16``, ``I``) are scaled to 0-255 (``/257``), not clipped;
  alpha is dropped (as ``PIL.Image.convert("RGB")``, Keras and torchvision do); EXIF orientation is not applied;
  GIFs give their first frame;
* a file that cannot be decoded, including PIL's decompression-bomb warning *and* error, raises
  :class:`UnreadableImage`; the data source turns that into a skipped sample.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ftprobe.core.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "FolderScan", "UnreadableImage", "is_image_file", "load_rgb", "scan_folder"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class UnreadableImage(DataError):
    """One image file cannot be decoded; ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read image {path!r}: {reason}")


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float grey image to 8-bit ``L`` (Pillow's own convert clips at 255)."""
    arr = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        arr = np.nan_to_num(arr, nan=0.0)
    elif img.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = np.clip(arr, 0, 65535) / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_depth_to_l(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's "palette with transparency" warning; alpha dropped below
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode one image file to an 8-bit RGB ``PIL.Image`` (fully loaded, file closed).

    Raises:
        UnreadableImage: missing, empty, truncated or corrupt file, unsupported mode, decompression bomb.
    """
    p = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(p, "rb") as f, Image.open(f) as img:
                img.load()
                return _to_rgb(img)
    except Image.DecompressionBombError as e:
        raise UnreadableImage(p, f"decompression bomb: {e}") from None
    except Image.DecompressionBombWarning as e:
        raise UnreadableImage(p, f"decompression bomb (over PIL.Image.MAX_IMAGE_PIXELS): {e}") from None
    except FileNotFoundError:
        raise UnreadableImage(p, "file not found") from None
    except Exception as e:  # noqa: BLE001 - a decoder on untrusted bytes can raise anything; never crash the run
        raise UnreadableImage(p, f"{type(e).__name__}: {e}") from None


@dataclass
class FolderScan:
    """Result of :func:`scan_folder`.

    Attributes:
        kind: ``"image_folder"`` (class sub-folders) or ``"flat_folder"`` (images at the top level, no labels).
        paths: image paths in index order.
        labels: class index per path (``image_folder``) or ``None``.
        classes: sorted class folder names (empty for a flat folder).
        skipped: ``(path, reason)`` found while scanning (loose images beside class folders, broken links ...).
    """

    kind: str
    paths: list[str]
    labels: list[int] | None
    classes: tuple[str, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _scandir_sorted(path: str, skipped: list[tuple[str, str]]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        skipped.append((path, f"cannot list folder: {type(e).__name__}: {e}"))
        return []


def _dir_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; cycles are cut by the visited set
    except OSError:
        return False


def _walk_images(folder: str, visited: set[tuple[int, int]], skipped: list[tuple[str, str]]) -> list[str]:
    """All image files under ``folder``, depth first in sorted order, each real folder entered at most once."""
    out: list[str] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        key = _dir_key(current)
        if key is None or key in visited:
            continue
        visited.add(key)
        subdirs = []
        for e in _scandir_sorted(current, skipped):
            if _is_dir(e):
                subdirs.append(e.path)
            elif is_image_file(e.name):
                if e.is_file():
                    out.append(e.path)
                elif e.is_symlink():
                    skipped.append((e.path, "broken symbolic link"))
        # files of a folder first, then its sub-folders in sorted order (stack: push reversed)
        stack.extend(reversed(subdirs))
    return out


def _sort_within(paths: list[str], top: str) -> list[str]:
    return sorted(paths, key=lambda p: os.path.relpath(p, top).split(os.sep))


def scan_folder(root: str | os.PathLike[str]) -> FolderScan:
    """Scan an image folder: class sub-folders (ImageFolder layout) if any sub-folder holds an image, else flat.

    Class folders are searched recursively; in a flat folder only the top-level images count. In the class layout,
    images lying beside the class folders are skipped with a reason. Empty class folders still count as classes, so
    class indices match a training split that had them.

    Raises:
        DataError: the folder cannot be listed, or holds no image file.
    """
    top = os.fspath(root)
    skipped: list[tuple[str, str]] = []
    entries = _scandir_sorted(top, skipped)
    if skipped:
        raise DataError(f"Cannot read the data folder {top!r}: {skipped[0][1]}. Check the path and its permissions.")
    visited: set[tuple[int, int]] = set()
    top_key = _dir_key(top)
    if top_key is not None:
        visited.add(top_key)
    loose = [e.path for e in entries if not _is_dir(e) and is_image_file(e.name) and e.is_file()]
    class_dirs = [e for e in entries if _is_dir(e)]
    per_class: list[list[str]] = [_sort_within(_walk_images(d.path, visited, skipped), d.path) for d in class_dirs]
    if any(per_class):
        paths, labels = [], []
        for label, files in enumerate(per_class):
            paths.extend(files)
            labels.extend([label] * len(files))
        reason = "loose image beside class folders; move it into a class folder (class folders win)"
        skipped = [(p, reason) for p in loose] + skipped
        return FolderScan("image_folder", paths, labels, tuple(d.name for d in class_dirs), skipped)
    if loose:
        return FolderScan("flat_folder", loose, None, (), skipped)
    ext = " ".join(IMAGE_EXTENSIONS)
    raise DataError(
        f"No image files found in {top!r}: looked for {ext} (any case) at its top level (a flat folder) and "
        "recursively in its sub-folders (one sub-folder per class). Point --data at the folder that holds them."
    )
