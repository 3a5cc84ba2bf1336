"""The options of a comparison, grouped by what they are about; ``ftprobe compare`` (the CLI) and
:func:`ftprobe.compare` both build them and hand them to :func:`ftprobe.api.run_comparison`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Callbacks", "DataOptions", "ModelOptions", "RunOptions", "quiet"]


def quiet(msg: str) -> None:
    """A callback that hears nothing."""


@dataclass
class ModelOptions:
    """How the models are loaded: ``arch`` of state-dict checkpoints (one, or one per model), ``trust`` pickled
    whole modules, the ``ema`` weights (one value, or one per model), and one ``labels`` entry per model."""

    arch: str | Sequence[str | None] | None = None
    trust: bool = False
    ema: bool | Sequence[bool | None] | None = None
    labels: Sequence[str] | None = None


@dataclass
class DataOptions:
    """How ``data`` is read: batches, a seeded subset, preprocessing (``size`` None: the base's image size) and
    loader workers."""

    batch_size: int = 32
    limit: int | None = None
    seed: int = 0
    preprocess: str = "imagenet"
    size: int | None = None
    workers: int = 0


@dataclass
class RunOptions:
    """How the pass runs: device, which pairs, the probe's image size, checkpoint and resume, autocast, intervals
    and controls, and the command line recorded in the result."""

    device: str | torch.device | None = "auto"
    pairs: str = "first"
    input_size: int | None = None
    checkpoint: str | Path | None = None
    checkpoint_every: int = 0
    resume: bool = False
    amp: str | None = None
    intervals: bool = False
    interval_groups: int = 20
    level: float = 0.95
    random_init: bool = False
    seed_pairs: Sequence[Sequence[str]] = ()
    argv: Sequence[str] | None = None


@dataclass
class Callbacks:
    """What a caller hears during a run (see :func:`compare` for each)."""

    notice: Callable[[str], None] = quiet
    progress: Callable[[int], None] | None = None
    on_start: Callable[[int | None], None] | None = None
    on_prepared: Callable[[list[dict[str, Any]]], None] | None = None
    status: Callable[[str], None] = quiet
