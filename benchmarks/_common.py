"""Shared set-up of the benchmarks: models, in-memory data, the floor, timing and memory helpers."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from ftprobe.testing import perturbed_copy

STUDY_LAYERS = ["conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d",
                "mixed4e", "mixed5a", "mixed5b"]


class Images(Dataset):
    """Seeded random images with 10 class labels and their global index (no decoding cost: the floor and the
    analysis read the same tensors)."""

    classes = tuple(f"c{i}" for i in range(10))

    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i


def googlenet_pair(seed: int = 0):
    torch.manual_seed(seed)
    base = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False).eval()
    return base, perturbed_copy(base, noise=0.1, seed=seed + 1).eval()


def loader(n: int, size: int, batch_size: int) -> DataLoader:
    return DataLoader(Images(n, size), batch_size=batch_size, shuffle=False)


def floor(models, data: DataLoader) -> None:
    """The floor: every model forward over the same data, nothing else."""
    with torch.inference_mode():
        for x, _y, _i in data:
            for m in models:
                m(x)


def alternate(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Run the functions alternately ``repeats`` times; the median wall time of each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss_of(script: str, *args: str) -> float:
    """Peak resident memory (MiB) of a fresh process running ``script args`` with ``--measure-memory``."""
    out = subprocess.run([sys.executable, script, *args, "--measure-memory"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def own_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
