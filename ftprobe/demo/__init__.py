"""The study end to end on a generated art world (``ftprobe demo``), and the pieces ``examples/paper_study.py`` reuses.

- :mod:`ftprobe.demo.world`: the deterministic world (photo-like scenes of objects; paintings in five styles) and its
  PNG export;
- :mod:`ftprobe.demo.model`: a small CNN whose blocks carry the study's layer names;
- :mod:`ftprobe.demo.train`: the study's optimiser, best-on-validation training, top-1/3/5 and mAP;
- :mod:`ftprobe.demo.variants`: the transfer variants and their cache; :mod:`ftprobe.demo.findings`: the study's
  findings checked on the numbers; :mod:`ftprobe.demo.study`: :func:`run_demo`;
- :mod:`ftprobe.demo.protocol`: the protocol on real image files (splits, loaders, checkpoints).

Submodules are imported on use, so ``import ftprobe.demo`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DemoNet", "Settings", "World", "export_world", "run_demo"]

_EXPORTS = {
    "DemoNet": "ftprobe.demo.model",
    "Settings": "ftprobe.demo.variants",
    "World": "ftprobe.demo.world",
    "export_world": "ftprobe.demo.world",
    "run_demo": "ftprobe.demo.study",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ftprobe.demo' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
