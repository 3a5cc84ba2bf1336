"""A metric defined and registered inside a script (no package, no entry point), run on a tiny model pair.

    python examples/local_metric.py        # a few seconds on CPU

``ftprobe.register_metric`` makes the class available by name in this process (``ftprobe metrics`` would list it with
the provider ``local``). The metric is model-scoped: one instance per model, ``compute`` gives per-model values and
``compare`` per-pair values. To ship it, put the class in a package and declare it under
``[project.entry-points."ftprobe.metrics"]`` (see docs/plugins.md).
"""

from __future__ import annotations

from typing import Any

import torch

import ftprobe
from ftprobe import Metric, ModelStep, Need, Scope
from ftprobe.testing import TinyImages, tiny_pair


@ftprobe.register_metric
class ActiveShare(Metric):
    """Share of images on which each channel is active (spatial mean > 0), per model, and how it changed."""

    name = "active_share"
    needs = Need.ACTIVATIONS
    scope = Scope.MODEL
    higher_is_more_similar = None

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("counts", {}, reduce="sum")  # {"active": (C,), "n": ()} int64, created at the first batch

    def views(self) -> frozenset[str]:
        return frozenset({"gap"})

    def update(self, step: ModelStep) -> None:
        active = (step.act.view("gap") > self.threshold).sum(dim=0)  # (C,) images with the channel active
        batch = {"active": active, "n": active.new_tensor(step.index.shape[0])}
        self.counts = {k: self.counts[k] + v for k, v in batch.items()} if self.counts else batch

    def share(self) -> torch.Tensor:
        """The fraction of images each channel is active on, ``(C,)``."""
        return self.counts["active"].double() / self.counts["n"] if self.counts else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> dict[str, Any]:
        share = self.share()
        return {"share_mean": share.mean(), "dead_channels": int((share == 0).sum()), "share": share}

    def compare(self, base: Metric, tuned: Metric) -> dict[str, Any]:
        assert isinstance(base, ActiveShare) and isinstance(tuned, ActiveShare)
        change = tuned.share() - base.share()
        return {"share_change_mean": change.abs().mean(), "share_change": change}


def main() -> None:
    base, tuned = tiny_pair()
    result = ftprobe.compare(
        base, tuned, data=TinyImages(n=32, size=16), layers=["mixed4a", "mixed5b"], metrics="active_share,cka",
        batch_size=8, size=16, preprocess="none", device="cpu",
    )
    print(f"{'metric':<13}{'layer':<9}{'subject':<15}{'key':<19}value")
    for row in result.records():
        subject = row["model"] if row["scope"] == "model" else f"{row['base']} → {row['tuned']}"
        print(f"{row['metric']:<13}{row['layer']:<9}{subject:<15}{row['key']:<19}{row['value']:.4f}")


if __name__ == "__main__":
    main()
