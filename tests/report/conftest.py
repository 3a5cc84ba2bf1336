"""Shared fixtures of the report tests: one small real comparison (three TinyNets, hostile names) and a report of it.

Chromium drives the browser checks; when its binary is missing those tests FAIL with the install command (a report
nobody has opened in a browser is not tested).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ftprobe
from ftprobe.report import figures, write_report
from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy

# Class folders whose names would run code if a report pasted them into HTML unescaped (a folder name cannot
# hold "/", so "</script>" itself cannot be a class) and one that matplotlib would read as mathtext.
HOSTILE_CLASSES = ("<script>alert(1)", "<img src=x onerror=alert(2)>", "cls $x^2$")
MODEL_LABELS = ("base", "<i>tuned</i>", "run2")
LAYERS = ("conv2d0", "mixed4d", "mixed5b")


@pytest.fixture(scope="session")
def hostile_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_image_folder(tmp_path_factory.mktemp("report_imgs"), classes=3, per_class=5, size=32, seed=3)
    for i, name in enumerate(HOSTILE_CLASSES):
        (root / f"class_{i}").rename(root / name)
    return root


@pytest.fixture(scope="session")
def report_result(hostile_images: Path) -> ftprobe.Result:
    """base against a perturbed copy and a more perturbed one (two pairs), every metric, k = 3 and 5, cross CKA."""
    base = TinyNet(num_classes=3, seed=0)
    tuned, run2 = perturbed_copy(base, noise=0.3, seed=1), perturbed_copy(base, noise=0.6, seed=2)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is several times faster on a shared 2-core machine
    try:
        return ftprobe.compare(
            base, tuned, run2, labels=list(MODEL_LABELS), layers=list(LAYERS), data=hostile_images, pairs="first",
            options={"topk_overlap": {"k": [3, 5]}, "class_concentration": {"k": [3, 5]}, "cka": {"cross": True}},
            size=32, batch_size=5, device="cpu",
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def report_dir(report_result: ftprobe.Result, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(report_result, out, summary_lines=["Fine-tuning changed <b>mixed5b</b> most."])
    return out


# -- running the CLI in-process ------------------------------------------------------------------------------------




@pytest.fixture(scope="session")
def names() -> SimpleNamespace:
    """The hostile class names, the model labels and the layers of :func:`report_result`."""
    return SimpleNamespace(classes=HOSTILE_CLASSES, models=MODEL_LABELS, layers=LAYERS)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Keep each matplotlib figure by file name as well as writing it."""
    kept: dict[str, object] = {}
    save = figures._save

    def keep(fig, path):
        kept[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return kept
