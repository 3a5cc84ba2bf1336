"""Full analysis against the floor: four metrics on the study's 12 GoogLeNet layers (by their Lucid aliases),
256 generated images at 224 px, batch 32, a random-init base and a perturbed copy.

    python benchmarks/bench_overhead.py [--images 256] [--size 224] [--repeats 3] [--intervals 20]

Prints the time of the full analysis as a ratio to the floor (both models forward over the same data, nothing
else), medians of alternated runs in one process, and the peak memory of each measured in a fresh process.
Target: time ratio at most 1.10. ``--intervals G`` also times the same analysis with intervals over G groups of
images, as a ratio to the analysis without them in the same run (intervals are on by default only if that ratio is
at most 1.10).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _common as c  # noqa: E402

import ftprobe  # noqa: E402


def analysis(base, tuned, data, **kw) -> ftprobe.Result:
    return ftprobe.compare(base, tuned, data=data, layers=c.STUDY_LAYERS, device="cpu",
                           metrics="cka,weight_l2,topk_overlap,class_concentration", **kw)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mode", choices=["floor", "analysis", "intervals"])
    p.add_argument("--intervals", type=int, default=0, metavar="G",
                   help="also time the analysis with intervals over G groups of images (ratio to the analysis)")
    p.add_argument("--measure-memory", action="store_true")
    a = p.parse_args()
    if a.measure_memory:
        base, tuned = c.googlenet_pair()
        run = {"floor": lambda d: c.floor([base, tuned], d), "analysis": lambda d: analysis(base, tuned, d),
               "intervals": lambda d: analysis(base, tuned, d, intervals=True, interval_groups=a.intervals)}[a.mode]
        run(c.loader(2, 64, 2))  # warm-up: what the mode imports and sets up once is not the job's memory
        print(json.dumps(c.memory_of(lambda: run(c.loader(a.images, a.size, a.batch_size)))))
        return
    base, tuned = c.googlenet_pair()
    data = c.loader(a.images, a.size, a.batch_size)
    analysis(base, tuned, c.loader(a.batch_size, a.size, a.batch_size))  # warm-up (first-call kernel set-up)
    c.floor([base, tuned], c.loader(a.batch_size, a.size, a.batch_size))
    modes = {"floor": lambda: c.floor([base, tuned], data), "analysis": lambda: analysis(base, tuned, data)}
    if a.intervals:
        modes["intervals"] = lambda: analysis(base, tuned, data, intervals=True, interval_groups=a.intervals)
    med = c.alternate(modes, a.repeats)
    args = ["--images", str(a.images), "--size", str(a.size), "--batch-size", str(a.batch_size)]
    mem_floor = c.peak_rss_of(__file__, *args, "--mode", "floor")
    mem_analysis = c.peak_rss_of(__file__, *args, "--mode", "analysis")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"job: googlenet ×2, {len(c.STUDY_LAYERS)} layers, {a.images} images at {a.size} px, batch {a.batch_size}, "
          f"medians of {a.repeats} alternated runs")
    print(f"time   analysis / floor = {med['analysis'] / med['floor']:.3f}   (floor {med['floor']:.2f} s)")
    print(f"memory analysis / floor = {mem_analysis['peak_mib'] / mem_floor['peak_mib']:.3f}   (peak RSS "
          f"{mem_analysis['peak_mib']:.0f} vs {mem_floor['peak_mib']:.0f} MiB; added by the job "
          f"{mem_analysis['added_mib']:.0f} vs {mem_floor['added_mib']:.0f} MiB)")
    if a.intervals:
        mem_iv = c.peak_rss_of(__file__, *args, "--mode", "intervals", "--intervals", str(a.intervals))
        print(f"time   intervals ({a.intervals} groups) / analysis = {med['intervals'] / med['analysis']:.3f}   "
              f"(/ floor {med['intervals'] / med['floor']:.3f})")
        print(f"memory intervals / analysis = {mem_iv['peak_mib'] / mem_analysis['peak_mib']:.3f}   (peak RSS "
              f"{mem_iv['peak_mib']:.0f} vs {mem_analysis['peak_mib']:.0f} MiB; added by the job "
              f"{mem_iv['added_mib']:.0f} vs {mem_analysis['added_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
