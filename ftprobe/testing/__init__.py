"""Tools for testing ftprobe and metric plugins: tiny seeded models and data, and the metric contract tests.

``MetricContract`` (and the rest of :mod:`ftprobe.testing.contract`) needs pytest; it is imported on first use so
that ``import ftprobe.testing`` works without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .data import Harness, SyntheticRun, TinyImages, ViewLog, natural_images, synthetic_run, tiny_pair
from .models import ReuseNet, TinyNet, make_image_folder, perturbed_copy

_CONTRACT = ("SAME", "ContractSpec", "MetricContract", "assert_outputs_close", "check_identity")

__all__ = [
    "ContractSpec",
    "Harness",
    "MetricContract",
    "ReuseNet",
    "SAME",
    "SyntheticRun",
    "TinyImages",
    "TinyNet",
    "ViewLog",
    "assert_outputs_close",
    "check_identity",
    "make_image_folder",
    "natural_images",
    "perturbed_copy",
    "synthetic_run",
    "tiny_pair",
]


def __getattr__(name: str) -> Any:
    if name not in _CONTRACT:
        raise AttributeError(f"module 'ftprobe.testing' has no attribute {name!r}")
    import pytest

    pytest.register_assert_rewrite("ftprobe.testing.contract")  # detailed assertion messages in plugin test runs
    value = getattr(importlib.import_module("ftprobe.testing.contract"), name)
    globals()[name] = value
    return value
