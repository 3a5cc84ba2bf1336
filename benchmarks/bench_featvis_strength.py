"""How far above the data feature visualisation drives each channel of a trained small model.

    python benchmarks/bench_featvis_strength.py [--layer mixed4b] [--size 96] [--steps 512] [--channels all|N|5,13]

The demo's CNN (:class:`ftprobe.demo.model.DemoNet`, width 8) is trained briefly on the demo world's photos (seeded:
``--photos`` images, ``--epochs`` passes, SGD lr 0.1), then every channel tried is visualised with Lucid's full
default pipeline (Fourier parameterisation, colour decorrelation, standard transforms, redirected ReLU, Adam 0.05)
and, for comparison, without the random transforms. Each channel's activation on its optimised image (the spatial
mean, no transforms) is divided by the highest activation of that channel over two sets of 64 generated images at
the same size: the world's photos (the model's own kind of data) and 1/f natural-ish images
(:func:`ftprobe.testing.natural_images`). Prints the ratio per channel, how many reach 3×, the minimum and the median.
"""

from __future__ import annotations

import argparse
import time

import torch

from ftprobe.data import normalize
from ftprobe.demo.model import DemoNet
from ftprobe.demo.train import TensorBatches, fit, sgd
from ftprobe.demo.world import World
from ftprobe.testing import natural_images
from ftprobe.viz import channel_count, layer_scores, resolve_layer, visualize_channels

EVAL_START = 18_000_000  # the demo's "eval" split: photos the model was not trained on


def train(photos: int, epochs: int, seed: int) -> DemoNet:
    xs, ys = World(size=32, seed=0).photos(range(photos))
    net = DemoNet(10, 8, seed=seed)
    fit(net, sgd([(net.parameters(), 0.1)]), TensorBatches(xs, ys, 64, seed=seed, shuffle=True, transform=normalize),
        epochs=epochs)
    return net.eval()


def summary(name: str, ratio: torch.Tensor) -> str:
    return (f"{name:34s} ≥3×: {int((ratio >= 3).sum()):3d}/{len(ratio)}   min {float(ratio.min()):6.2f}   "
            f"median {float(ratio.median()):6.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--layer", default="mixed4b")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--channels", default="all", help="all, the first N (e.g. 8), or a list (e.g. 5,13,14)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    net = train(a.photos, a.epochs, a.seed)
    layer = resolve_layer(net, a.layer, a.size)
    if a.channels == "all":
        chans = list(range(channel_count(layer)))
    elif "," in a.channels:
        chans = [int(c) for c in a.channels.split(",")]
    else:
        chans = list(range(int(a.channels)))
    world, _ = World(size=a.size, seed=0).photos(range(EVAL_START, EVAL_START + 64))
    best = {"world photos": layer_scores(net, layer, world).amax(dim=0)[chans],
            "natural-ish images": layer_scores(net, layer, natural_images(64, a.size)).amax(dim=0)[chans]}
    print(f"DemoNet trained on {a.photos} photos × {a.epochs} epochs; layer {a.layer}, {len(chans)} channels, "
          f"{a.steps} steps at {a.size} px, seed {a.seed}")
    start = visualize_channels(net, a.layer, chans, steps=0, size=a.size, seed=a.seed).activation  # same for both
    for label, transforms in (("Lucid's pipeline", None), ("without the random transforms", [])):
        kw = {} if transforms is None else {"transforms": transforms}
        vis = visualize_channels(net, a.layer, chans, steps=a.steps, size=a.size, seed=a.seed, **kw)
        print(f"\n{label}: optimised activation / best of 64 ...")
        for data, top in best.items():
            ratio = vis.activation / top
            print(summary(f"  {data}", ratio))
            print("   per channel:", " ".join(f"{v:.2f}" for v in ratio.tolist()))
        print(f"  raised above the start image: {int((vis.activation > start).sum())}/{len(chans)} channels")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
