"""The data layer: image folders, CSV lists, torch datasets and loaders → batches with global sample indices.

Entry point: :func:`open_data`. Preprocessing presets and the normalisation (reused by feature visualisation):
:data:`PRESETS`, :func:`make_transform`, :func:`normalize`, :func:`denormalize`.
"""

from __future__ import annotations

from ftprobe.data.api import open_data
from ftprobe.data.csvtable import CsvTable, read_csv
from ftprobe.data.images import IMAGE_EXTENSIONS, FolderScan, UnreadableImage, load_rgb, scan_folder
from ftprobe.data.loaders import Batch
from ftprobe.data.sources import DataSource
from ftprobe.data.streams import ShuffledLoaderWarning
from ftprobe.data.transforms import (
    PRESETS,
    ImageTransform,
    Preset,
    denormalize,
    get_preset,
    make_transform,
    normalize,
    resize_center_crop,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "Batch",
    "CsvTable",
    "DataSource",
    "FolderScan",
    "ImageTransform",
    "Preset",
    "ShuffledLoaderWarning",
    "UnreadableImage",
    "denormalize",
    "get_preset",
    "load_rgb",
    "make_transform",
    "normalize",
    "open_data",
    "read_csv",
    "resize_center_crop",
    "scan_folder",
]
