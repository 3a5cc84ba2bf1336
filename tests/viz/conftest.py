from __future__ import annotations

import pytest
import torch

from ftprobe.viz import FourierImage


@pytest.fixture(autouse=True)
def _one_thread():
    """The CI machine is shared: one intra-op thread avoids oversubscription (small tensors gain nothing from two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def natural_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random natural-ish RGB images in [0, 1]: a 1/f amplitude spectrum (as natural photographs have), contrast
    0.2, and a random mean colour in [0.2, 0.8] per channel: ``(n, 3, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        raw = FourierImage(n, size, decorrelate=False, generator=g, sd=1.0).raw().double()
    raw = raw - raw.mean(dim=(2, 3), keepdim=True)
    raw = raw / raw.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    colour = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64) * 0.6 + 0.2
    return (0.2 * raw + colour).clamp(0, 1).float()
