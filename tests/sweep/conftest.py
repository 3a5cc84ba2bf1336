"""Shared helpers of the architecture sweep and the bad-input matrix: a labelled tensor dataset and the check that a
user mistake ends in one ``Error:`` line, never a traceback (the in-process CLI runner and the one-thread rule are the
root conftest's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import ftprobe
from ftprobe.testing import make_image_folder, perturbed_copy
from ftprobe.testing.cli import CliRun

#: The four built-in metrics, named explicitly so that an installed third-party plugin cannot change what runs.
BUILTIN_METRICS = "cka,weight_l2,topk_overlap,class_concentration"
TV_ARCH = "torchvision:mobilenet_v3_small"


class LabelledTensors(Dataset):
    """``n`` seeded random images ``(channels, size, size)`` in two classes; items are ``(x, y, index)``.

    The ``classes`` attribute gives the class count that ``class_concentration`` needs.
    """

    classes = ["even", "odd"]

    def __init__(self, n: int = 8, size: int = 32, seed: int = 0, channels: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, channels, size, size, generator=g)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.x[i], i % 2, i


def _assert_user_error(r: CliRun, *needles: str, code: int = 1) -> None:
    """One ``Error:`` message (exit 1, or 2 for click usage errors) that contains every needle; no traceback."""
    assert r.code == code, f"exit {r.code}, stderr:\n{r.err}"
    assert "Error:" in r.err and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, f"{needle!r} not in:\n{r.err}"


@pytest.fixture
def user_error() -> Callable[..., None]:
    """``user_error(result, *needles, code=1)``: the CLI printed one ``Error:`` holding the needles, no traceback."""
    return _assert_user_error


@pytest.fixture
def tensor_data() -> type[LabelledTensors]:
    """The :class:`LabelledTensors` dataset class (test files cannot import from conftest under importlib mode)."""
    return LabelledTensors


@pytest.fixture(scope="session")
def small_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random-init MobileNetV3-small and a perturbed copy, saved with their architecture (no --arch needed)."""
    import torchvision

    d = tmp_path_factory.mktemp("sweep_ckpt")
    torch.manual_seed(0)
    base = torchvision.models.mobilenet_v3_small()
    ftprobe.save(base, d / "base.pt", arch=TV_ARCH)
    ftprobe.save(perturbed_copy(base, 0.2, seed=1), d / "tuned.pt", arch=TV_ARCH)
    return d / "base.pt", d / "tuned.pt"


@pytest.fixture(scope="session")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of four 40-px PNGs."""
    return make_image_folder(tmp_path_factory.mktemp("sweep_imgs"), classes=2, per_class=4, size=40, seed=0)
