"""CPU cost of feature visualisation per channel, against the floor, on torchvision GoogLeNet (random init).

    python benchmarks/bench_featvis.py [--sizes 128 224] [--channels 3] [--steps 20] [--threads 1]

One *step* optimises ``--channels`` images of ``mixed4d`` (``inception4d``) together: Fourier parameterisation with
colour decorrelation, Lucid's standard transforms, imagenet normalisation, forward to the layer (stopped there),
backward to the spectrum, Adam. The floor is one forward + backward of the same batch (``--channels`` images of
``size`` px) without the parameterisation or the transforms: a plain input tensor, the same forward stopped after the
layer, the same channel objective, backward to the input. The three kinds of step (floor, featvis, featvis without
Lucid's redirected ReLU gradient) alternate step by step in one process; each figure is a median over steps. The
per-channel figure is the step time divided by the number of channels, times 512 steps (the default).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftprobe.core.capture import evaluating  # noqa: E402
from ftprobe.data import normalize  # noqa: E402
from ftprobe.viz import ChannelVisualizer, resolve_layer  # noqa: E402
from ftprobe.viz.layer import LayerGrab, select_channels  # noqa: E402


def floor_step(model, layer, x: torch.Tensor, channels: torch.Tensor) -> None:
    """One forward (stopped after the layer) and backward to the input of a plain batch."""
    with ExitStack() as stack:
        stack.enter_context(evaluating(model))
        grab = LayerGrab(model, layer.name).attach(stack)
        x = x.detach().requires_grad_(True)
        obj = select_channels(grab(normalize(x)), layer.layout, channels)
        (-obj.sum()).backward(inputs=[x])


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(model, size: int, k: int, steps: int) -> dict[str, float]:
    """Median time of one step of each kind; the kinds alternate step by step, so load changes hit all alike."""
    layer = resolve_layer(model, "mixed4d", size)
    channels = list(range(0, 528, 528 // k))[:k]
    x = torch.rand(k, 3, size, size, generator=torch.Generator().manual_seed(0))
    ch = torch.tensor(channels)
    times: dict[str, list[float]] = {"floor": [], "featvis": [], "featvis_no_redirect": []}
    with ChannelVisualizer(model, layer, channels, size=size) as vis, \
            ChannelVisualizer(model, layer, channels, size=size, relu_redirect=False) as plain:
        fns = {"floor": lambda: floor_step(model, layer, x, ch), "featvis": vis.step, "featvis_no_redirect": plain.step}
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(steps):
            for name, fn in fns.items():
                times[name].append(timed(fn))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    p.add_argument("--channels", type=int, default=3, help="channels optimised together (the study showed 3)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each kind (alternated)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: on a shared 2-core machine, 2 threads spin against other jobs)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False).eval()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"job: googlenet mixed4d, {a.channels} channels per batch, median of {a.steps} steps of each kind, "
          "alternated step by step")
    print("| size | featvis step / floor | no redirect / floor | featvis step | floor step | per channel, 512 steps |")
    print("|---|---|---|---|---|---|")
    for size in a.sizes:
        m = measure(model, size, a.channels, a.steps)
        per_channel_512 = m["featvis"] * 512 / a.channels
        print(f"| {size} px | **{m['featvis'] / m['floor']:.2f}** | {m['featvis_no_redirect'] / m['floor']:.2f} | "
              f"{m['featvis'] * 1e3:.0f} ms | {m['floor'] * 1e3:.0f} ms | {per_channel_512:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
