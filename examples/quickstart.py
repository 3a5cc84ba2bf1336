"""Quick start: two GoogLeNet checkpoints (random init, one perturbed as a stand-in for fine-tuning) and a
generated image folder, compared with every installed metric through the real CLI.

    python examples/quickstart.py            # 96 images at 224 px (about a minute on 2 CPU cores)
    python examples/quickstart.py --quick    # 24 images at 96 px (seconds; what CI runs)

Nothing is downloaded: the weights are random, the images are generated. Swap in your own checkpoints and image
folder on the `ftprobe compare` line it prints.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch
import torchvision

import ftprobe
from ftprobe.cli import main
from ftprobe.testing import make_image_folder, perturbed_copy


def prepare(out: Path, per_class: int, size: int) -> tuple[Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    base = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False)
    tuned = perturbed_copy(base, noise=0.3, seed=1)
    ftprobe.save(base, out / "base.pt", arch="torchvision:googlenet", aux_logits=False)
    ftprobe.save(tuned, out / "tuned.pt", arch="torchvision:googlenet", aux_logits=False)
    images = make_image_folder(out / "images", classes=4, per_class=per_class, size=size + size // 4, seed=0)
    return out / "base.pt", out / "tuned.pt", images


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings (CI)")
    parser.add_argument("--out", default="ftprobe-quickstart", help="working folder")
    args = parser.parse_args(argv)
    per_class, size = (6, 96) if args.quick else (24, 224)
    base, tuned, images = prepare(Path(args.out), per_class, size)
    cmd = ["compare", str(base), str(tuned), "--layers", "mixed3b", "--layers", "mixed4d", "--layers", "mixed5b",
           "--data", str(images), "--size", str(size), "--batch-size", "8", "--k", "5",
           "--out", str(Path(args.out) / "results")]
    print("$ ftprobe " + shlex.join(cmd), flush=True)
    main(cmd)


if __name__ == "__main__":
    run()
