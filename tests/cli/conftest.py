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
