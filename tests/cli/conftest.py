from __future__ import annotations

import pytest
import torch
import torchvision

from ftprobe.testing import make_image_folder, perturbed_copy


@pytest.fixture(scope="session")
def googlenet_checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("googlenet")
    torch.manual_seed(0)
    base = torchvision.models.googlenet(weights=None, init_weights=True)
    torch.save(base.state_dict(), d / "base.pt")
    torch.save(perturbed_copy(base, 0.1).state_dict(), d / "tuned.pt")
    return d / "base.pt", d / "tuned.pt"


@pytest.fixture(scope="session")
def cli_images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli_imgs"), classes=3, per_class=4, size=40)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Three pickled TinyNets laid out as a user's runs: ``base.pt``, ``run1/model.pt``, ``run2/model.pt``."""
    from ftprobe.testing import TinyNet

    d = tmp_path_factory.mktemp("runs")
    base = TinyNet(num_classes=3, seed=0)
    torch.save(base, d / "base.pt")
    for i in (1, 2):
        (d / f"run{i}").mkdir()
        torch.save(perturbed_copy(base, noise=0.3, seed=i), d / f"run{i}" / "model.pt")
    return d
