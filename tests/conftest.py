from __future__ import annotations

import pytest
import torch

from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy


# Tests use tiny tensors, where thread start-up costs more than it saves (and CI shares its 2 cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_pair():
    base = TinyNet(seed=0)
    return base, perturbed_copy(base, noise=0.2, seed=1)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"), classes=3, per_class=6, size=32, seed=0)
