"""``--amp``: forwards under autocast, metric statistics in float64, numbers close to the float32 run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ftprobe
from ftprobe.core.errors import FtprobeError
from ftprobe.testing import TinyNet, perturbed_copy


def _data(n: int = 48, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _run(amp: str | None, seen: list[torch.dtype] | None = None):
    base = TinyNet()
    tuned = perturbed_copy(base, 0.3)
    if seen is not None:
        base.mixed4a.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return ftprobe.compare(base, tuned, data=_data(), layers=["mixed3a", "mixed4a"], metrics="cka,topk_overlap",
                           options={"topk_overlap": {"k": 8}}, amp=amp, device="cpu")


@pytest.mark.parametrize("amp,dtype,tol", [("bf16", torch.bfloat16, 0.03), ("fp16", torch.float16, 0.01)])
def test_amp_runs_the_forwards_in_low_precision_and_keeps_float64_statistics(amp, dtype, tol):
    seen: list[torch.dtype] = []
    low = _run(amp, seen)
    full = _run(None)
    # The probe forward (one image, shapes only) runs in float32; every batch ran under autocast (on the CPU here).
    assert seen[0] == torch.float32 and len(seen) == 4 and set(seen[1:]) == {dtype}
    assert low.run["amp"] == amp and "amp" not in full.run
    for layer in ("mixed3a", "mixed4a"):
        a, b = low.get("cka", layer, "cka"), full.get("cka", layer, "cka")
        assert a == pytest.approx(b, abs=tol) and a != b  # close to float32, and not the float32 run itself
    assert low.get("cka", "*", "dtype") == "float64"


def test_amp_identical_models_still_give_cka_one():
    base = TinyNet()
    r = ftprobe.compare(base, base, data=_data(), layers=["mixed4a"], metrics="cka", amp="bf16", device="cpu")
    assert r.get("cka", "mixed4a", "cka") == pytest.approx(1.0, abs=1e-12)


def test_amp_unknown_precision_says_what_to_use():
    with pytest.raises(FtprobeError, match="bf16 or fp16"):
        _run("fp8")
