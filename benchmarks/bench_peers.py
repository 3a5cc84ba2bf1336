"""CKA 4×4 cross-layer on resnet18 layer1–layer4 against torch-cka 0.21 and the floor (PEERS.md job R).

    python benchmarks/bench_peers.py [--images 2048] [--repeats 3]

resnet18 (random init, seed 0) against a copy with Gaussian noise of 0.5× each parameter tensor's std; 2048 inputs
3×64×64 (standard normal), batch 64, fixed order. torch-cka computes minibatch CKA (unbiased HSIC per batch) on
flattened features, so ftprobe runs the same estimator (`features=flatten, estimator=minibatch, cross=True`); its
default (exact CKA on spatially averaged features) is timed too. Prints time and peak-memory ratios to the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
import _common as c  # noqa: E402

import ftprobe  # noqa: E402

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def models():
    torch.manual_seed(0)
    base = torchvision.models.resnet18().eval()
    tuned = c.perturbed_copy(base, noise=0.5, seed=1).eval()
    return base, tuned


def data(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 64, 64, generator=g)), batch_size=64, shuffle=False)


def run_floor(base, tuned, loader) -> None:
    with torch.inference_mode():
        for (x,) in loader:
            base(x)
            tuned(x)


def run_ftprobe(base, tuned, loader, default: bool = False):
    opts = {} if default else {"features": "flatten", "estimator": "minibatch"}
    r = ftprobe.compare(base, tuned, data=((x, None) for (x,) in loader), layers=LAYERS, metrics="cka",
                        options={"cka": {**opts, "cross": True}}, device="cpu")
    return r.get("cka", "*", "cka_cross")


def run_torch_cka(base, tuned, loader):
    from torch_cka import CKA

    cka = CKA(base, tuned, model1_name="base", model2_name="tuned", model1_layers=LAYERS, model2_layers=LAYERS,
              device="cpu")
    cka.compare(loader)
    return cka.export()["CKA"]


MODES = {"floor": run_floor, "ftprobe": run_ftprobe, "ftprobe-default": lambda b, t, d: run_ftprobe(b, t, d, True),
         "torch-cka": run_torch_cka}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mode", choices=list(MODES))
    p.add_argument("--measure-memory", action="store_true")
    a = p.parse_args()
    if a.measure_memory:  # every mode imports torch-cka, so only what the job allocates differs
        import torch_cka  # noqa: F401

        print(json.dumps(c.memory_of(lambda: MODES[a.mode](*models(), data(a.images)))))
        return
    base, tuned = models()
    for fn in MODES.values():  # warm-up
        fn(base, tuned, data(128))
    ours = torch.as_tensor(run_ftprobe(base, tuned, data(a.images)), dtype=torch.float64)
    peer = torch.as_tensor(run_torch_cka(base, tuned, data(a.images)), dtype=torch.float64)
    med = c.alternate({name: (lambda fn=fn: fn(base, tuned, data(a.images))) for name, fn in MODES.items()},
                      a.repeats)
    mem = {name: c.peak_rss_of(__file__, "--images", str(a.images), "--mode", name) for name in MODES}
    print(f"job: resnet18 ×2 (noise 0.5 std), {a.images} images 3×64×64, batch 64, CKA 4×4 cross-layer, "
          f"medians of {a.repeats} alternated runs, {torch.get_num_threads()} torch threads")
    print(f"max |ftprobe − torch-cka| over the 4×4 matrix (same estimator) = {(ours - peer).abs().max():.2e}")
    f = mem["floor"]
    for name in MODES:
        m = mem[name]
        print(f"{name:16s} time/floor = {med[name] / med['floor']:.3f}   peak memory/floor = "
              f"{m['peak_mib'] / f['peak_mib']:.3f}   added memory/floor = {m['added_mib'] / f['added_mib']:.2f}   "
              f"({med[name]:.2f} s, peak {m['peak_mib']:.0f} MiB, added {m['added_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
