"""Shared set-up of the benchmarks: models, in-memory data, the floor, timing and memory helpers."""

from __future__ import annotations

import json
import os
import re
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


#: glibc's malloc, left to itself, raises its mmap threshold after the first large free and from then on serves
#: blocks up to 32 MiB from its heap, which it keeps: the resident peak then measures the allocator's retention as
#: much as the program (the same ftprobe run measured 273 or 316 MiB above the floor's models and data depending on
#: it). A fixed threshold returns every large block to the system when it is freed, so the peak measures the memory
#: that was live at once: the CPU analogue of a GPU's peak allocated memory. Every mode runs under the same setting.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def peak_rss_of(script: str, *args: str) -> dict[str, float]:
    """Memory of a fresh process running ``script args --measure-memory``, which prints :func:`memory_of` as JSON.

    The process runs with :data:`MALLOC_ENV`."""
    out = subprocess.run([sys.executable, script, *args, "--measure-memory"], capture_output=True, text=True,
                         check=True, env={**os.environ, **MALLOC_ENV}).stdout
    return json.loads(out.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def memory_of(fn: Callable[[], object]) -> dict[str, float]:
    """Peak resident memory while ``fn`` runs (MiB), and how much of it ``fn`` added to what was resident before.

    The process's high-water mark is reset first (Linux ``clear_refs`` 5), so what happened before the call does not
    count. Call it after the imports and let ``fn`` build its models and data: ``added`` is then the analogue of a
    GPU's peak allocated memory (models, data, activations, metric state), without the import footprint of torch
    (about 0.8 GiB here) that every mode shares and that would hide any difference. Where the reset is not
    available, ``peak`` is the process's lifetime peak and ``added`` is measured against the resident size at the
    call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = _status_mib("VmRSS") if sys.platform == "linux" else 0.0
    fn()
    peak = _status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": peak, "added_mib": peak - before}
