"""Scale benchmarks, each a ratio measured in one run:

1. many models: a base and 3 tuned models in one pass (`--pairs first`) against 3 separate runs (target ≤ 0.7);
2. truncated forward: probing only `inception3a` against the full forward of the same models (target ≤ 0.5); the
   ftprobe side includes its fixed costs (a probe forward of one image per model, hooks, metric set-up), which 256
   images amortise as a real dataset would;
3. memory flat in the number of images: peak memory of the full analysis at 512 and at 4096 images (target within
   5 %), each in a fresh process, data generated batch by batch (nothing dataset-sized is held).

    python benchmarks/bench_scale.py [--which many,truncated,memory] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
import _common as c  # noqa: E402

import ftprobe  # noqa: E402

ALL4 = "cka,weight_l2,topk_overlap,class_concentration"


class Stream:
    """Seeded batches generated on the fly (labels over 10 classes, global indices): O(batch) memory."""

    classes = tuple(f"c{i}" for i in range(10))

    def __init__(self, n: int, size: int, batch: int = 32) -> None:
        self.n, self.size, self.batch = n, size, batch

    def __iter__(self):
        for start in range(0, self.n, self.batch):
            g = torch.Generator().manual_seed(start)
            b = min(self.batch, self.n - start)
            yield (torch.randn(b, 3, self.size, self.size, generator=g), torch.randint(0, 10, (b,), generator=g),
                   torch.arange(start, start + b))


def many(repeats: int) -> str:
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10).eval()
    tuned = [c.perturbed_copy(base, 0.1 * (i + 1), seed=i + 1).eval() for i in range(3)]
    kw = dict(metrics=ALL4, layers=["layer1", "layer2", "layer3", "layer4"], device="cpu",
              options={"class_concentration": {"num_classes": 10}})

    def one_pass():
        ftprobe.compare(base, *tuned, data=Stream(512, 64), **kw)

    def separate():
        for t in tuned:
            ftprobe.compare(base, t, data=Stream(512, 64), **kw)

    one_pass()
    med = c.alternate({"one pass": one_pass, "3 separate runs": separate}, repeats)
    return (f"many models (resnet18, 512 images at 64 px, 4 metrics, 4 layers): one pass / 3 separate runs = "
            f"{med['one pass'] / med['3 separate runs']:.3f} (target ≤ 0.7)")


def truncated(repeats: int, images: int = 256) -> str:
    base, tuned = c.googlenet_pair()
    loader = c.loader(images, 224, 32)

    def probe_3a():
        ftprobe.compare(base, tuned, data=loader, layers=["inception3a"], metrics="cka", device="cpu")

    def full():
        c.floor([base, tuned], loader)

    probe_3a()
    med = c.alternate({"inception3a": probe_3a, "full": full}, repeats)
    return (f"truncated forward (googlenet ×2, {images} images at 224 px): probing inception3a / full forward = "
            f"{med['inception3a'] / med['full']:.3f} (target ≤ 0.5)")


def memory_run(n: int) -> None:
    print(json.dumps(c.memory_of(lambda: ftprobe.compare(
        *c.googlenet_pair(), data=Stream(n, 64), layers=c.STUDY_LAYERS, metrics=ALL4, device="cpu",
        options={"class_concentration": {"num_classes": 10}}))))


def memory() -> str:
    small = c.peak_rss_of(__file__, "--memory-images", "512")
    large = c.peak_rss_of(__file__, "--memory-images", "4096")
    return (f"memory flat (googlenet ×2, 12 layers, 4 metrics, 64 px): peak RSS 4096 / 512 images = "
            f"{large['peak_mib'] / small['peak_mib']:.3f} ({large['peak_mib']:.0f} vs {small['peak_mib']:.0f} MiB; "
            f"target within 5 %); added by the run {large['added_mib']:.0f} vs {small['added_mib']:.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--which", default="many,truncated,memory")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--truncated-images", type=int, default=256)
    p.add_argument("--memory-images", type=int)
    p.add_argument("--measure-memory", action="store_true")
    a = p.parse_args()
    if a.memory_images:
        memory_run(a.memory_images)
        return
    print(f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    for which in a.which.split(","):
        jobs = {"many": lambda: many(a.repeats), "truncated": lambda: truncated(a.repeats, a.truncated_images),
                "memory": memory}
        print(jobs[which](), flush=True)


if __name__ == "__main__":
    main()
